package gateway

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// parseTextFast parses the common, canonical subset of the text format 0.0.4
// — what client libraries write — into the same families as expfmt's
// TextParser. It returns ok=false for anything outside that subset
// (unusual spacing, timestamps, quoted names, gauge histograms, any
// syntax error), and the caller then uses expfmt, which also produces the
// canonical error messages. FuzzParseTextFast checks that every accepted
// input gives exactly expfmt's result.
//
// The body is copied into one string that every parsed label shares;
// family names and help texts, which outlive the push, are interned.
func parseTextFast(in []byte) (map[string]*parsedFamily, bool) {
	return parseTextLines(in, nil)
}

// textLine is where one line of a text body went, as parseTextLines saw it.
type textLine struct {
	// end is the offset of the line's newline in the body.
	end int
	// value is the offset of a sample's value in the body, -1 for other
	// lines.
	value int
	// family is the family of a sample, HELP or TYPE line; nil for other
	// lines and for families without samples.
	family *parsedFamily
	// simple is the index of a simple sample in family.simple, else -1.
	simple int
	// grouped is the index of a summary or histogram sample's metric in
	// family.metrics, else -1; role is the part of the metric it sets: the
	// index of its quantile or bucket, roleSum or roleCount.
	grouped, role int
}

// Roles of the _sum and _count lines of a summary or histogram.
const (
	roleSum   = -1
	roleCount = -2
)

// parseTextLines is parseTextFast that, when lines is not nil, also
// appends to it where every line of in went.
func parseTextLines(in []byte, lines *[]textLine) (map[string]*parsedFamily, bool) {
	if len(in) > 0 && in[len(in)-1] != '\n' {
		return nil, false
	}
	src := string(in)
	p := fastParser{families: make(map[string]*fastFamily, 16), labelArena: make([]label, 0, strings.Count(src, "=\""))}
	var lineFamilies []*fastFamily
	for offset := 0; len(src) > 0; {
		i := strings.IndexByte(src, '\n')
		line := src[:i]
		src = src[i+1:]
		p.lineFamily, p.lineValue, p.lineSimple, p.lineGrouped = nil, -1, -1, -1
		var ok bool
		switch {
		case len(line) == 0:
			ok = true
		case line[0] == '#':
			ok = p.comment(line)
		default:
			ok = p.sample(line)
		}
		if !ok {
			return nil, false
		}
		if lines != nil {
			value := p.lineValue
			if value >= 0 {
				value += offset
			}
			*lines = append(*lines, textLine{end: offset + i, value: value, simple: p.lineSimple, grouped: p.lineGrouped, role: p.lineRole})
			lineFamilies = append(lineFamilies, p.lineFamily)
		}
		offset += i + 1
	}
	for i, ff := range lineFamilies {
		if ff != nil && (len(ff.metrics) > 0 || len(ff.simple) > 0) {
			(*lines)[i].family = &ff.parsedFamily
		}
	}
	out := make(map[string]*parsedFamily, len(p.families))
	for name, ff := range p.families {
		pf := &ff.parsedFamily
		if len(pf.metrics) == 0 && len(pf.simple) == 0 {
			continue
		}
		if pf.typ == dto.MetricType_HISTOGRAM {
			for _, m := range pf.metrics {
				normalizeHistogram(m.Histogram)
			}
		}
		pf.name = intern(name)
		if pf.hasHelp {
			pf.help = intern(pf.help)
		}
		out[pf.name] = pf
	}
	return out, true
}

// fastFamily is a family while the fast parser builds it.
type fastFamily struct {
	parsedFamily
	// typed is set once the family has a type, from a TYPE line or its
	// first sample.
	typed bool
}

type fastParser struct {
	families map[string]*fastFamily
	// last is the family of the previous sample line, which the next one
	// usually shares.
	last                   *fastFamily
	lastName               string
	lastIsCount, lastIsSum bool
	// lineFamily, lineValue, lineSimple, lineGrouped and lineRole tell
	// where the current line went: see textLine.
	lineFamily                                   *fastFamily
	lineValue, lineSimple, lineGrouped, lineRole int
	// grouped maps family name and label set to the index of the summary
	// or histogram metric that its lines build in its family's metrics.
	grouped map[string]int
	// lastGrouped is the index of the metric the previous grouped line went
	// to, of lastGroupedFamily with lastGroupedLabels.
	lastGrouped       int
	lastGroupedFamily *fastFamily
	lastGroupedLabels []label
	labels            []label
	// labelArena holds the labels of every simple metric of the body.
	labelArena []label
}

// family resolves a metric name like expfmt's setOrCreateCurrentMF: a
// _count, _sum or _bucket name belongs to an existing summary or histogram.
func (p *fastParser) family(name string) (ff *fastFamily, isCount, isSum bool) {
	if ff = p.families[name]; ff != nil {
		return ff, false, false
	}
	count := len(name) > 6 && strings.HasSuffix(name, "_count")
	sum := len(name) > 4 && strings.HasSuffix(name, "_sum")
	bucket := len(name) > 7 && strings.HasSuffix(name, "_bucket")
	var base string
	switch {
	case count:
		base = name[:len(name)-6]
	case sum:
		base = name[:len(name)-4]
	}
	if base != "" {
		if ff = p.families[base]; ff != nil && ff.typ == dto.MetricType_SUMMARY {
			return ff, count, sum
		}
	}
	if bucket {
		base = name[:len(name)-7]
	}
	if base != "" {
		if ff = p.families[base]; ff != nil && (ff.typ == dto.MetricType_HISTOGRAM || ff.typ == dto.MetricType_GAUGE_HISTOGRAM) {
			return ff, count, sum
		}
	}
	ff = &fastFamily{parsedFamily: parsedFamily{name: name}}
	p.families[name] = ff
	return ff, false, false
}

// comment handles a line starting with '#'.
func (p *fastParser) comment(line string) bool {
	// Only sample lines in a row share the resolved family.
	p.last = nil
	if len(line) == 1 {
		return true
	}
	if line[1] != ' ' {
		return false
	}
	rest := line[2:]
	keyword, args, _ := strings.Cut(rest, " ")
	isHelp, isType := keyword == "HELP", keyword == "TYPE"
	if !isHelp && !isType {
		// A generic comment, unless it could be read as HELP or TYPE
		// with other spacing.
		return len(keyword) > 0 && strings.IndexByte(keyword, '\t') < 0
	}
	name, text, found := strings.Cut(args, " ")
	if !found || !isLegacyName(name, true) || len(text) == 0 || text[0] == ' ' || text[0] == '\t' {
		return false
	}
	ff, _, _ := p.family(name)
	p.lineFamily = ff
	if isHelp {
		if ff.hasHelp {
			return false
		}
		help, ok := unescapeHelp(text)
		if !ok {
			return false
		}
		ff.help, ff.hasHelp = help, true
		return true
	}
	if ff.typed {
		return false
	}
	switch text {
	case "counter":
		ff.typ = dto.MetricType_COUNTER
	case "gauge":
		ff.typ = dto.MetricType_GAUGE
	case "untyped":
		ff.typ = dto.MetricType_UNTYPED
	case "summary":
		ff.typ = dto.MetricType_SUMMARY
	case "histogram":
		ff.typ = dto.MetricType_HISTOGRAM
	default:
		return false
	}
	ff.typed = true
	return true
}

// sample handles a sample line: name, optional labels, one space, value.
func (p *fastParser) sample(line string) bool {
	end := 0
	for end < len(line) && isNameByte(line[end], end == 0, true) {
		end++
	}
	if end == 0 {
		return false
	}
	name := line[:end]
	var ff *fastFamily
	var isCount, isSum bool
	if p.last != nil && name == p.lastName {
		ff, isCount, isSum = p.last, p.lastIsCount, p.lastIsSum
	} else {
		ff, isCount, isSum = p.family(name)
		p.last, p.lastName, p.lastIsCount, p.lastIsSum = ff, name, isCount, isSum
	}
	if !ff.typed {
		ff.typ, ff.typed = dto.MetricType_UNTYPED, true
	}
	typ := ff.typ
	rest := line[end:]
	p.labels = p.labels[:0]
	// reserved is set by a label name that checkSimple rejects; the
	// parser checks the rest of what it does.
	reserved := false
	quantile, le := math.NaN(), math.NaN()
	if len(rest) > 0 && rest[0] == '{' {
		rest = rest[1:]
		for {
			ln := 0
			for ln < len(rest) && isNameByte(rest[ln], ln == 0, false) {
				ln++
			}
			if ln == 0 || ln+1 >= len(rest) || rest[ln] != '=' || rest[ln+1] != '"' {
				return false
			}
			labelName := rest[:ln]
			value, n, ok := unescapeLabelValue(rest[ln+2:])
			if !ok || labelName == model.MetricNameLabel {
				return false
			}
			rest = rest[ln+2+n:]
			special := false
			switch {
			case typ == dto.MetricType_SUMMARY && labelName == model.QuantileLabel:
				q, err := parseSampleFloat(value)
				if err != nil {
					return false
				}
				quantile, special = q, true
			case typ == dto.MetricType_HISTOGRAM && labelName == model.BucketLabel:
				b, err := parseSampleFloat(value)
				if err != nil {
					return false
				}
				le, special = b, true
			}
			if !special {
				for _, l := range p.labels {
					if l.name == labelName {
						return false
					}
				}
				p.labels = append(p.labels, label{labelName, value})
				reserved = reserved || strings.HasPrefix(labelName, model.ReservedLabelPrefix)
			}
			if len(rest) == 0 {
				return false
			}
			if rest[0] == '}' {
				rest = rest[1:]
				break
			}
			if rest[0] != ',' || len(rest) < 2 || rest[1] == '}' {
				return false
			}
			rest = rest[1:]
		}
	}
	if len(rest) < 2 || rest[0] != ' ' || strings.IndexByte(rest[1:], ' ') >= 0 || strings.IndexByte(rest[1:], '\t') >= 0 {
		return false
	}
	v, err := parseSampleFloat(rest[1:])
	if err != nil {
		return false
	}
	p.lineFamily, p.lineValue = ff, len(line)-len(rest)+1
	switch typ {
	case dto.MetricType_COUNTER, dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
		var labels []label
		if len(p.labels) > 0 {
			start := len(p.labelArena)
			p.labelArena = append(p.labelArena, p.labels...)
			labels = p.labelArena[start:len(p.labelArena):len(p.labelArena)]
		}
		ff.simple = append(ff.simple, simpleMetric{labels: labels, value: v, checked: !reserved})
		p.lineSimple = len(ff.simple) - 1
	case dto.MetricType_SUMMARY:
		if !isCount && !isSum && math.IsNaN(quantile) {
			return false
		}
		m := p.groupedMetric(ff)
		if m.Summary == nil {
			m.Summary = &dto.Summary{}
		}
		switch {
		case isCount:
			c, ok := exactUint(v)
			if !ok {
				return false
			}
			m.Summary.SampleCount = proto.Uint64(c)
			p.lineRole = roleCount
		case isSum:
			m.Summary.SampleSum = proto.Float64(v)
			p.lineRole = roleSum
		default:
			m.Summary.Quantile = append(m.Summary.Quantile, &dto.Quantile{Quantile: proto.Float64(quantile), Value: proto.Float64(v)})
			p.lineRole = len(m.Summary.Quantile) - 1
		}
	case dto.MetricType_HISTOGRAM:
		if !isCount && !isSum && (math.IsNaN(le) || !strings.HasSuffix(name, "_bucket") || name == ff.name) {
			return false
		}
		m := p.groupedMetric(ff)
		if m.Histogram == nil {
			m.Histogram = &dto.Histogram{}
		}
		switch {
		case isCount:
			if c, ok := exactUint(v); ok {
				m.Histogram.SampleCount = proto.Uint64(c)
			} else if v >= 0 {
				m.Histogram.SampleCountFloat = proto.Float64(v)
			} else {
				return false
			}
			p.lineRole = roleCount
		case isSum:
			m.Histogram.SampleSum = proto.Float64(v)
			p.lineRole = roleSum
		default:
			b := &dto.Bucket{UpperBound: proto.Float64(le)}
			if c, ok := exactUint(v); ok {
				b.CumulativeCount = proto.Uint64(c)
			} else if v >= 0 {
				b.CumulativeCountFloat = proto.Float64(v)
			} else {
				return false
			}
			m.Histogram.Bucket = append(m.Histogram.Bucket, b)
			p.lineRole = len(m.Histogram.Bucket) - 1
		}
	default:
		return false
	}
	return true
}

// groupedMetric returns the summary or histogram metric of ff with the
// current line's labels, creating it on first use; later lines keep the
// first line's labels. It notes the metric's index as the line's.
func (p *fastParser) groupedMetric(ff *fastFamily) *dto.Metric {
	// The lines of one summary or histogram metric usually follow each
	// other with the same labels in the same order.
	if p.lastGroupedFamily != ff || !slices.Equal(p.lastGroupedLabels, p.labels) {
		p.lastGrouped, p.lastGroupedFamily = p.groupedMetricByKey(ff), ff
		p.lastGroupedLabels = append(p.lastGroupedLabels[:0], p.labels...)
	}
	p.lineGrouped = p.lastGrouped
	return ff.metrics[p.lastGrouped]
}

// groupedMetricByKey is groupedMetric without the shortcut: it returns the
// index of the metric in ff.metrics.
func (p *fastParser) groupedMetricByKey(ff *fastFamily) int {
	if p.grouped == nil {
		p.grouped = map[string]int{}
	}
	sorted := append([]label(nil), p.labels...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	var key strings.Builder
	key.WriteString(ff.name)
	for _, l := range sorted {
		key.WriteString(separator)
		key.WriteString(l.name)
		key.WriteString(separator)
		key.WriteString(l.value)
	}
	if i, ok := p.grouped[key.String()]; ok {
		return i
	}
	m := &dto.Metric{}
	for _, l := range p.labels {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.name), Value: proto.String(l.value)})
	}
	p.grouped[key.String()] = len(ff.metrics)
	ff.metrics = append(ff.metrics, m)
	return len(ff.metrics) - 1
}

// exactUint converts v to uint64 when it is a whole number in range, the
// case in which expfmt's conversion is exact.
func exactUint(v float64) (uint64, bool) {
	if v < 0 || v >= 1<<64 || v != math.Trunc(v) {
		return 0, false
	}
	return uint64(v), true
}

// parseSampleFloat parses a value as expfmt does.
func parseSampleFloat(s string) (float64, error) {
	if v, ok := parseWholeNumber(s); ok {
		return v, nil
	}
	if containsByte(s, 'p', 'P', '_') {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseFloat(s, 64)
}

// maxWholeDigits is the most digits parseWholeNumber takes: every number
// of 15 digits is a float64 exactly.
const maxWholeDigits = 15

// parseWholeNumber parses the most common sample values, whole numbers of
// up to maxWholeDigits digits with an optional sign and an optional
// fraction of zeros ("42", "-7", "1.0"), to what strconv.ParseFloat returns
// for them, and reports false for anything else.
func parseWholeNumber(s string) (float64, bool) {
	i, neg := 0, false
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		neg, i = s[0] == '-', 1
	}
	start := i
	var n int64
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int64(s[i]-'0')
	}
	if i == start || i-start > maxWholeDigits {
		return 0, false
	}
	if i < len(s) {
		if s[i] != '.' {
			return 0, false
		}
		for i++; i < len(s); i++ {
			if s[i] != '0' {
				return 0, false
			}
		}
	}
	v := float64(n)
	if neg {
		v = -v
	}
	return v, true
}

// isNameByte reports whether b may appear at this position of a legacy
// metric name (withColon) or label name.
func isNameByte(b byte, first, withColon bool) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_' ||
		withColon && b == ':' || !first && b >= '0' && b <= '9'
}

func isLegacyName(b string, withColon bool) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if !isNameByte(b[i], i == 0, withColon) {
			return false
		}
	}
	return true
}

// unescapeHelp undoes the escapes of a HELP text: \\, \n and \".
func unescapeHelp(b string) (string, bool) {
	if strings.IndexByte(b, '\\') < 0 {
		return b, true
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			out = append(out, b[i])
			continue
		}
		i++
		if i == len(b) {
			return "", false
		}
		switch b[i] {
		case '\\', '"':
			out = append(out, b[i])
		case 'n':
			out = append(out, '\n')
		default:
			return "", false
		}
	}
	return string(out), true
}

// unescapeLabelValue reads a label value up to its closing quote and returns
// it with the number of bytes consumed, the quote included.
func unescapeLabelValue(b string) (string, int, bool) {
	end := strings.IndexByte(b, '"')
	if end < 0 {
		return "", 0, false
	}
	if strings.IndexByte(b[:end], '\\') < 0 {
		if !utf8.ValidString(b[:end]) {
			return "", 0, false
		}
		return b[:end], end + 1, true
	}
	out := make([]byte, 0, end)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			if !utf8.Valid(out) {
				return "", 0, false
			}
			return string(out), i + 1, true
		case '\\':
			i++
			if i == len(b) {
				return "", 0, false
			}
			switch b[i] {
			case '\\', '"':
				out = append(out, b[i])
			case 'n':
				out = append(out, '\n')
			default:
				return "", 0, false
			}
		default:
			out = append(out, c)
		}
	}
	return "", 0, false
}

// normalizeHistogram turns every count of a histogram into a float count
// once any of them is fractional, as expfmt does.
func normalizeHistogram(h *dto.Histogram) {
	if h == nil {
		return
	}
	anyFloats := h.GetSampleCountFloat() != 0
	for _, b := range h.GetBucket() {
		anyFloats = anyFloats || b.GetCumulativeCountFloat() != 0
	}
	if !anyFloats {
		return
	}
	if h.GetSampleCountFloat() == 0 {
		h.SampleCountFloat = proto.Float64(float64(h.GetSampleCount()))
		h.SampleCount = nil
	}
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCountFloat() == 0 {
			b.CumulativeCountFloat = proto.Float64(float64(b.GetCumulativeCount()))
			b.CumulativeCount = nil
		}
	}
}
