package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

const (
	pushTimeName        = "push_time_seconds"
	pushTimeHelp        = "Last Unix time when changing this group in the Pushgateway succeeded."
	pushFailureTimeName = "push_failure_time_seconds"
	pushFailureTimeHelp = "Last Unix time when changing this group in the Pushgateway failed."
	pushStaleName       = "push_stale"
	pushStaleHelp       = "1 while the group is expired because its last successful push is older than its TTL, else 0."
)

// series is one pushed metric (one dto.Metric) ready for exposition. It is
// immutable once built, but for slot.
type series struct {
	// slot is the index slot of the series' identity, set when the
	// series is applied and indexed; the series is the current version of
	// its identity while slot.se is the series itself.
	slot *slot
	// key orders the series in exposition order (see sortKey).
	key string
	// groupKey is the key of the group holding the series.
	groupKey string
	// simple marks a counter, gauge or untyped series with nothing but
	// labels and a value, whose OpenMetrics line derives from its text
	// line.
	simple bool
	// integral marks a simple series whose value's text form is an
	// integer without exponent, which OpenMetrics writes with ".0".
	integral bool
	// classic marks a summary or classic histogram with whole counts below
	// 2^53 and no exemplars, whose OpenMetrics lines derive from its text
	// lines.
	classic bool
	// floatCounts marks a histogram with fractional counts, which
	// OpenMetrics 1.0 cannot carry.
	floatCounts bool
	// textLen is the length of the text lines at the start of enc.
	textLen int32
	// id identifies the series by metric name and label set.
	id uint64
	// enc holds the series in the text format 0.0.4, without HELP and
	// TYPE, followed by the protobuf encoding of its dto.Metric.
	enc []byte
	// openMetrics caches the OpenMetrics lines, built on first use.
	openMetrics atomic.Pointer[[]byte]
}

// text returns the series in the text format 0.0.4, without HELP and TYPE.
func (se *series) text() []byte { return se.enc[:se.textLen:se.textLen] }

// metric returns the protobuf encoding of the series' dto.Metric.
func (se *series) metric() []byte { return se.enc[se.textLen:] }

// setEncoding sets the encodings of se: enc holds its text lines, textLen
// bytes, then its protobuf encoding.
func (se *series) setEncoding(enc []byte, textLen int) {
	se.enc, se.textLen = enc, int32(textLen)
}

// family is one pushed metric family of a group. It is immutable once built.
type family struct {
	name    string
	help    string
	hasHelp bool
	typ     dto.MetricType
	// time is when the push that wrote this family was received.
	time   time.Time
	series []*series
	// invalid is the reason the family cannot be stored, found while
	// building it; it is reported by the consistency check.
	invalid []error
}

// Dto decodes the family into a dto.MetricFamily. The result is a fresh copy.
func (f *family) Dto() *dto.MetricFamily {
	mf := &dto.MetricFamily{Name: proto.String(f.name), Type: f.typ.Enum()}
	if f.hasHelp {
		mf.Help = proto.String(f.help)
	}
	mf.Metric = make([]*dto.Metric, len(f.series))
	for i, s := range f.series {
		m := &dto.Metric{}
		if err := proto.Unmarshal(s.metric(), m); err != nil {
			// Series are built from marshalled metrics; failing here
			// means memory corruption.
			panic(fmt.Sprintf("BUG: cannot decode stored metric of %s: %v", f.name, err))
		}
		mf.Metric[i] = m
	}
	return mf
}

// label is one name/value pair of a metric.
type label struct{ name, value string }

// simpleMetric is a counter, gauge or untyped metric with nothing but
// labels and a value.
type simpleMetric struct {
	labels []label
	value  float64
	// checked is set when the labels are known to pass checkSimple: legacy
	// names outside the reserved prefix, no name twice, UTF-8 values.
	checked bool
}

// parsedFamily is a pushed family before it is sanitised and encoded.
// Simple metrics are kept as label slices, cheap to build and encode; the
// others stay dto.Metric in metrics.
type parsedFamily struct {
	name    string
	help    string
	hasHelp bool
	typ     dto.MetricType
	metrics []*dto.Metric
	simple  []simpleMetric
}

// fromDto splits a decoded family into simple and other metrics.
func fromDto(mf *dto.MetricFamily) *parsedFamily {
	p := &parsedFamily{name: mf.GetName(), help: mf.GetHelp(), hasHelp: mf.Help != nil, typ: mf.GetType()}
	for _, m := range mf.Metric {
		v, ok := simpleValue(p.name, p.typ, m)
		if !ok || !isPlainSimpleMetric(m) {
			p.metrics = append(p.metrics, m)
			continue
		}
		labels := make([]label, len(m.Label))
		for i, lp := range m.Label {
			labels[i] = label{lp.GetName(), lp.GetValue()}
		}
		p.simple = append(p.simple, simpleMetric{labels: labels, value: v})
	}
	return p
}

// toDto returns the family as one dto.MetricFamily.
func (p *parsedFamily) toDto() *dto.MetricFamily {
	mf := &dto.MetricFamily{Name: proto.String(p.name), Type: p.typ.Enum(), Metric: append([]*dto.Metric(nil), p.metrics...)}
	if p.hasHelp {
		mf.Help = proto.String(p.help)
	}
	for _, sm := range p.simple {
		mf.Metric = append(mf.Metric, sm.dto(p.typ))
	}
	return mf
}

// dto returns the metric as a dto.Metric of type typ.
func (sm *simpleMetric) dto(typ dto.MetricType) *dto.Metric {
	m := emptyMetric(typ)
	for _, l := range sm.labels {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.name), Value: proto.String(l.value)})
	}
	v := proto.Float64(sm.value)
	switch {
	case m.Counter != nil:
		m.Counter.Value = v
	case m.Gauge != nil:
		m.Gauge.Value = v
	default:
		m.Untyped.Value = v
	}
	return m
}

// newFamily sanitises a pushed family for the group g (grouping labels set,
// instance added, labels sorted), validates it and encodes every metric. gl
// is g as groupingLabels returns it, or nil to have it computed. It may
// modify p. Problems that the Pushgateway reports from its consistency
// check are collected in family.invalid rather than returned.
func newFamily(p *parsedFamily, g Grouping, gl []label, groupKey string, t time.Time) (*family, error) {
	f := &family{
		name:    p.name,
		help:    p.help,
		hasHelp: p.hasHelp,
		typ:     p.typ,
		time:    t,
		series:  make([]*series, 0, len(p.metrics)+len(p.simple)),
	}
	if !model.LegacyValidation.IsValidMetricName(f.name) {
		f.invalid = append(f.invalid, fmt.Errorf("invalid metric name %q", f.name))
	}
	if _, ok := dto.MetricType_name[int32(f.typ)]; !ok {
		return nil, fmt.Errorf("metric family %q has unknown type %d", f.name, f.typ)
	}
	seen := newIDSet(len(p.metrics) + len(p.simple))
	if len(p.simple) > 0 {
		if gl == nil {
			gl = groupingLabels(g)
		}
		f.addSimple(p.simple, gl, groupKey, seen)
	}
	for _, m := range p.metrics {
		if m.TimestampMs != nil {
			return nil, errTimestamp
		}
		sanitizeLabels(m, g)
		if err := checkMetric(f.name, f.typ, m); err != nil {
			f.invalid = append(f.invalid, err)
			continue
		}
		if err := checkCounts(f.name, m); err != nil {
			f.invalid = append(f.invalid, err)
			continue
		}
		if f.name == "" {
			continue // rejected for its name above; expfmt cannot encode it
		}
		s, err := newSeries(f, m, groupKey)
		if err != nil {
			return nil, err
		}
		f.add(s, seen, m)
	}
	if byKey := func(a, b *series) int { return strings.Compare(a.key, b.key) }; !slices.IsSortedFunc(f.series, byKey) {
		slices.SortFunc(f.series, byKey)
	}
	return f, nil
}

// add appends se to f unless a series of the same identity came before.
// m is the metric of se, only decoded to report a duplicate; nil means to
// decode se.
func (f *family) add(se *series, seen *idSet, m *dto.Metric) {
	if seen.add(se.id) {
		f.series = append(f.series, se)
		return
	}
	if m == nil {
		m = &dto.Metric{}
		if err := unmarshalMetric(se.metric(), m); err != nil {
			panic(fmt.Sprintf("BUG: cannot decode metric of %s just encoded: %v", f.name, err))
		}
	}
	f.invalid = append(f.invalid, duplicateError(f.name, m))
}

// simpleScratch is the temporary state of addSimple, pooled.
type simpleScratch struct {
	labels  []label
	pending []pendingSeries
	keys    []byte
}

// pendingSeries is a simple metric whose labels are sanitised.
type pendingSeries struct {
	labels []label
	id     uint64
	keyEnd int
	// value is the formatted sample value.
	value    [32]byte
	valueLen int
}

var simpleScratchPool = sync.Pool{New: func() any { return new(simpleScratch) }}

// addSimple sanitises, checks and encodes the simple metrics of f and adds
// their series. The series of one family share three allocations: their
// structs, their encodings and their sort keys.
func (f *family) addSimple(simple []simpleMetric, gl []label, groupKey string, seen *idSet) {
	// Grouping label names are checked when the URL is parsed, their
	// values here.
	groupingChecked := true
	for _, l := range gl {
		groupingChecked = groupingChecked && utf8.ValidString(l.value)
	}
	sc := simpleScratchPool.Get().(*simpleScratch)
	defer simpleScratchPool.Put(sc)
	// The sanitised labels of every metric, and the bytes they need.
	scratch, todo := sc.labels[:0], sc.pending[:0]
	encLen, keyLen := 0, 0
	for _, sm := range simple {
		start := len(scratch)
		scratch = sanitizeSimple(scratch, sm.labels, gl)
		labels := scratch[start:len(scratch):len(scratch)]
		todo = append(todo, pendingSeries{labels: labels, id: seriesID(f.name, labels)})
		pd := &todo[len(todo)-1]
		pd.valueLen = len(appendFloat(pd.value[:0], sm.value))
		encLen += simpleSampleSize(f.name, labels, pd.valueLen) + simpleMetricProtoSize(labels)
		keyLen += sortKeySize(labels, groupKey)
	}
	keyBytes := slices.Grow(sc.keys[:0], keyLen)
	for i := range todo {
		keyBytes = appendSortKey(keyBytes, todo[i].labels, groupKey, todo[i].id)
		todo[i].keyEnd = len(keyBytes)
	}
	keys := string(keyBytes)
	structs := make([]series, len(simple))
	enc := make([]byte, 0, encLen)
	keyStart := 0
	for i := range todo {
		pd := &todo[i]
		sm := simpleMetric{labels: pd.labels, value: simple[i].value}
		key := keys[keyStart:pd.keyEnd]
		keyStart = pd.keyEnd
		// Sanitising keeps checked labels checked when the grouping
		// labels are: it only sets grouping label values and adds labels
		// of names not there yet.
		if !simple[i].checked || !groupingChecked {
			if err := checkSimple(f.name, f.typ, &sm); err != nil {
				f.invalid = append(f.invalid, err)
				continue
			}
		}
		start := len(enc)
		enc = appendSimpleSample(enc, f.name, sm.labels, pd.value[:pd.valueLen])
		textEnd := len(enc)
		enc = appendSimpleMetricProto(enc, f.typ, sm.labels, sm.value)
		se := &structs[i]
		se.groupKey = groupKey
		se.id = pd.id
		se.key = key
		se.simple = true
		se.integral = isIntegralText(pd.value[:pd.valueLen])
		se.setEncoding(enc[start:len(enc):len(enc)], textEnd-start)
		f.add(se, seen, nil)
	}
	// Drop the references to pushed labels before pooling.
	clear(scratch)
	clear(todo)
	sc.labels, sc.pending, sc.keys = scratch[:0], todo[:0], keyBytes[:0]
}

// idSet tells whether a series id was seen before in one family.
type idSet struct {
	ids []uint64
	m   map[uint64]struct{}
}

// linearIDs is the family size up to which idSet scans a slice.
const linearIDs = 32

func newIDSet(n int) *idSet {
	if n > linearIDs {
		return &idSet{m: make(map[uint64]struct{}, n)}
	}
	return &idSet{ids: make([]uint64, 0, n)}
}

// add records id and reports whether it is new.
func (s *idSet) add(id uint64) bool {
	if s.m != nil {
		if _, dup := s.m[id]; dup {
			return false
		}
		s.m[id] = struct{}{}
		return true
	}
	if slices.Contains(s.ids, id) {
		return false
	}
	s.ids = append(s.ids, id)
	return true
}

// newSeries encodes the sanitised metric m of family f.
func newSeries(f *family, m *dto.Metric, groupKey string) (*series, error) {
	labels := make([]label, len(m.Label))
	for i, lp := range m.Label {
		labels[i] = label{lp.GetName(), lp.GetValue()}
	}
	s := &series{groupKey: groupKey}
	s.id = seriesID(f.name, labels)
	s.key = sortKey(labels, groupKey, s.id)
	size := proto.Size(m)
	enc, ok := appendGroupedText(make([]byte, 0, groupedTextSize(f.name, m)+size), f.name, f.typ, m)
	if !ok {
		text, err := encodeSeries(f.name, f.typ, m, false)
		if err != nil {
			return nil, err
		}
		enc = append(make([]byte, 0, len(text)+size), text...)
	}
	textLen := len(enc)
	enc, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(enc, m)
	if err != nil {
		return nil, fmt.Errorf("cannot encode metric of %q: %w", f.name, err)
	}
	s.setEncoding(enc[:len(enc):len(enc)], textLen)
	s.classic = isClassic(m)
	s.floatCounts = hasFloatCounts(m)
	return s, nil
}

// indexed reports whether se is the current version of its identity in the
// index. Must be called holding s.mu.
func (se *series) indexed() bool { return se.slot != nil && se.slot.se == se }

// sameIdentity returns the series of prev, sorted like every family's, with
// the identity of se (the same key), or nil; i is where the search starts
// and is advanced past the series below se and past the one returned.
// Walking the series of a family in order with one i visits prev once.
func sameIdentity(prev []*series, i *int, se *series) *series {
	if *i < len(prev) && prev[*i].id == se.id {
		// The common case of a family pushed again with the same
		// series: the same id means the same name and labels, so, in one
		// group, the same key.
		*i++
		return prev[*i-1]
	}
	for *i < len(prev) && prev[*i].key < se.key {
		*i++
	}
	if *i < len(prev) && prev[*i].key == se.key {
		*i++
		return prev[*i-1]
	}
	return nil
}

// hasFloatCounts reports a histogram with fractional counts.
func hasFloatCounts(m *dto.Metric) bool {
	h := m.GetHistogram()
	if h == nil {
		return false
	}
	if h.SampleCountFloat != nil || h.ZeroCountFloat != nil || len(h.GetPositiveCount())+len(h.GetNegativeCount()) > 0 {
		return true
	}
	for _, b := range h.GetBucket() {
		if b.CumulativeCountFloat != nil {
			return true
		}
	}
	return false
}

// maxExactCount is the largest count that a float64 holds exactly.
const maxExactCount = 1 << 53

// isClassic reports whether the OpenMetrics lines of a summary or
// histogram can be derived from its text lines: every count is a whole
// number a float64 holds exactly, and there is nothing the text format
// leaves out (exemplars, created timestamps, native buckets).
func isClassic(m *dto.Metric) bool {
	switch {
	case m.Summary != nil:
		return m.Summary.CreatedTimestamp == nil && m.Summary.GetSampleCount() < maxExactCount
	case m.Histogram != nil:
		h := m.Histogram
		if h.SampleCountFloat != nil || h.CreatedTimestamp != nil || h.GetSampleCount() >= maxExactCount ||
			len(h.GetPositiveSpan())+len(h.GetNegativeSpan()) > 0 || h.Schema != nil || len(h.GetExemplars()) > 0 {
			return false
		}
		for _, b := range h.GetBucket() {
			if b.CumulativeCountFloat != nil || b.Exemplar != nil || b.GetCumulativeCount() >= maxExactCount {
				return false
			}
		}
		return true
	}
	return false
}

// seriesID hashes a metric name and its sorted labels.
func seriesID(name string, labels []label) uint64 {
	var stack [512]byte
	b := append(stack[:0], name...)
	b = append(b, separator...)
	for _, l := range labels {
		b = append(b, l.name...)
		b = append(b, separator...)
		b = append(b, l.value...)
		b = append(b, separator...)
	}
	return xxhash.Sum64(b)
}

// encodeSeries renders one metric in the text format 0.0.4 (or OpenMetrics)
// without the HELP and TYPE lines, using expfmt so that the bytes are exactly
// what a client_golang exposition would contain.
func encodeSeries(name string, typ dto.MetricType, m *dto.Metric, openMetrics bool) ([]byte, error) {
	var buf bytes.Buffer
	mf := &dto.MetricFamily{Name: &name, Type: typ.Enum(), Metric: []*dto.Metric{m}}
	var err error
	if openMetrics {
		_, err = expfmt.MetricFamilyToOpenMetrics(&buf, mf)
	} else {
		_, err = expfmt.MetricFamilyToText(&buf, mf)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot encode metric of %q: %w", name, err)
	}
	b := buf.Bytes()
	// Drop the TYPE line.
	i := bytes.IndexByte(b, '\n')
	return bytes.Clone(b[i+1:]), nil
}

// familyHeader renders the HELP and TYPE lines of a family.
func familyHeader(name, help string, hasHelp bool, typ dto.MetricType, openMetrics bool) []byte {
	mf := &dto.MetricFamily{Name: &name, Type: typ.Enum(), Metric: []*dto.Metric{emptyMetric(typ)}}
	if hasHelp {
		mf.Help = &help
	}
	var buf bytes.Buffer
	if openMetrics {
		_, _ = expfmt.MetricFamilyToOpenMetrics(&buf, mf)
	} else {
		_, _ = expfmt.MetricFamilyToText(&buf, mf)
	}
	b := buf.Bytes()
	end := bytes.Index(b, []byte("\n# TYPE "))
	if end < 0 {
		end = 0
	} else {
		end++
	}
	end += bytes.IndexByte(b[end:], '\n') + 1
	return bytes.Clone(b[:end])
}

func emptyMetric(typ dto.MetricType) *dto.Metric {
	switch typ {
	case dto.MetricType_COUNTER:
		return &dto.Metric{Counter: &dto.Counter{}}
	case dto.MetricType_GAUGE:
		return &dto.Metric{Gauge: &dto.Gauge{}}
	case dto.MetricType_SUMMARY:
		return &dto.Metric{Summary: &dto.Summary{}}
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return &dto.Metric{Histogram: &dto.Histogram{}}
	default:
		return &dto.Metric{Untyped: &dto.Untyped{}}
	}
}

// sortKey encodes the order in which client_golang sorts the metrics of one
// family (fewer labels first, then by label values in label-name order;
// series that tie are ordered by group and identity) into a string that
// compares bytewise: the label count, then every value with 0x00 escaped as 0x00 0x01
// and ended by 0x00 0x00 (which sorts before any longer value), then the
// group key and the series id.
func sortKey(labels []label, groupKey string, id uint64) string {
	return string(appendSortKey(make([]byte, 0, sortKeySize(labels, groupKey)), labels, groupKey, id))
}

// appendSortKey appends the sortKey of a series to b.
func appendSortKey(b []byte, labels []label, groupKey string, id uint64) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(min(len(labels), math.MaxUint16)))
	for _, l := range labels {
		v := l.value
		for i := 0; i < len(v); i++ {
			if v[i] == 0 {
				b = append(b, 0, 1)
			} else {
				b = append(b, v[i])
			}
		}
		b = append(b, 0, 0)
	}
	b = append(b, groupKey...)
	return binary.BigEndian.AppendUint64(b, id)
}

// sortKeySize is the length of a sortKey without escaped zero bytes.
func sortKeySize(labels []label, groupKey string) int {
	n := 2 + len(groupKey) + 8
	for _, l := range labels {
		n += len(l.value) + 2
	}
	return n
}

// sanitizeLabels sets every grouping label to its URL value, adds an empty
// instance label when there is none, and sorts the labels by name.
func sanitizeLabels(m *dto.Metric, g Grouping) {
	matched := 0
	hasInstance := false
	for _, lp := range m.Label {
		name := lp.GetName()
		if v, ok := g[name]; ok {
			lp.Value = &v
			matched++
		}
		if name == model.InstanceLabel {
			hasInstance = true
		}
	}
	if matched < len(g) {
		for n, v := range g {
			if !hasLabel(m.Label, n) {
				m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(n), Value: proto.String(v)})
				hasInstance = hasInstance || n == model.InstanceLabel
			}
		}
	}
	if !hasInstance {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(model.InstanceLabel), Value: proto.String("")})
	}
	// Insertion sort: label sets are small and mostly sorted.
	ls := m.Label
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].GetName() < ls[j-1].GetName(); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// sanitizeSimple is sanitizeLabels for a label slice: it appends to out
// labels with every grouping label (gl, sorted by name) set to its URL
// value, an empty instance label added when there is none, sorted by name.
func sanitizeSimple(out, labels, gl []label) []label {
	start := len(out)
	out = append(out, labels...)
	matched, hasInstance := 0, false
	for i := start; i < len(out); i++ {
		for _, l := range gl {
			if l.name == out[i].name {
				out[i].value = l.value
				matched++
				break
			}
		}
		hasInstance = hasInstance || out[i].name == model.InstanceLabel
	}
	if matched < len(gl) {
		pushed := out[start:]
		for _, l := range gl {
			if !slices.ContainsFunc(pushed, func(p label) bool { return p.name == l.name }) {
				out = append(out, l)
				hasInstance = hasInstance || l.name == model.InstanceLabel
			}
		}
	}
	if !hasInstance {
		out = append(out, label{model.InstanceLabel, ""})
	}
	for i := start + 1; i < len(out); i++ {
		for j := i; j > start && out[j].name < out[j-1].name; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// groupingLabels returns g as labels sorted by name.
func groupingLabels(g Grouping) []label {
	gl := make([]label, 0, len(g))
	for n, v := range g {
		gl = append(gl, label{n, v})
	}
	slices.SortFunc(gl, func(a, b label) int { return strings.Compare(a.name, b.name) })
	return gl
}

// checkSimple is checkMetric for a simple metric's sorted labels.
func checkSimple(name string, typ dto.MetricType, sm *simpleMetric) error {
	prev := ""
	for _, l := range sm.labels {
		if l.name == prev || !isLegacyName(l.name, false) || strings.HasPrefix(l.name, model.ReservedLabelPrefix) || !utf8.ValidString(l.value) {
			// The rare error path: report it exactly as for a dto.Metric.
			return checkMetric(name, typ, sm.dto(typ))
		}
		prev = l.name
	}
	return nil
}

func hasLabel(labels []*dto.LabelPair, name string) bool {
	for _, lp := range labels {
		if lp.GetName() == name {
			return true
		}
	}
	return false
}

// checkMetric reports what client_golang's gatherer rejects in one metric:
// a value that does not match the family type, duplicate or invalid label
// names, an explicit quantile label on a summary, a label value that is not
// UTF-8.
func checkMetric(name string, typ dto.MetricType, m *dto.Metric) error {
	if typ == dto.MetricType_GAUGE && m.Gauge == nil ||
		typ == dto.MetricType_COUNTER && m.Counter == nil ||
		typ == dto.MetricType_SUMMARY && m.Summary == nil ||
		typ == dto.MetricType_HISTOGRAM && m.Histogram == nil ||
		typ == dto.MetricType_UNTYPED && m.Untyped == nil {
		return fmt.Errorf("collected metric %q { %s} is not a %s", name, m, typ)
	}
	prev := ""
	for _, lp := range m.Label {
		ln := lp.GetName()
		if ln == prev {
			return fmt.Errorf("collected metric %q { %s} has two or more labels with the same name: %s", name, m, ln)
		}
		if !model.LegacyValidation.IsValidLabelName(ln) || strings.HasPrefix(ln, model.ReservedLabelPrefix) {
			return fmt.Errorf("collected metric %q { %s} has a label with an invalid name: %s", name, m, ln)
		}
		if m.Summary != nil && ln == model.QuantileLabel {
			return fmt.Errorf("collected metric %q { %s} must not have an explicit %q label", name, m, model.QuantileLabel)
		}
		if !utf8.ValidString(lp.GetValue()) {
			return fmt.Errorf("collected metric %q { %s} has a label named %q whose value is not utf8: %#v", name, m, ln, lp.GetValue())
		}
		prev = ln
	}
	return nil
}

// staleFamily builds push_stale for a group with a TTL.
func staleFamily(g Grouping, groupKey string, stale bool, written time.Time) *family {
	var v float64
	if stale {
		v = 1
	}
	return gaugeFamily(pushStaleName, pushStaleHelp, g, groupKey, v, written)
}

// zeroed returns a copy of f with every sample value set to 0: values,
// counts, sums, quantile values and buckets.
func (f *family) zeroed() *family {
	mf := f.Dto()
	for _, m := range mf.Metric {
		zeroMetric(m)
	}
	groupKey := ""
	if len(f.series) > 0 {
		groupKey = f.series[0].groupKey
	}
	z, err := newFamily(fromDto(mf), nil, nil, groupKey, f.time)
	if err != nil {
		panic(fmt.Sprintf("BUG: cannot zero family %s: %v", f.name, err))
	}
	return z
}

func zeroMetric(m *dto.Metric) {
	zero := proto.Float64(0)
	if m.Gauge != nil {
		m.Gauge.Value = zero
	}
	if m.Counter != nil {
		m.Counter.Value = zero
	}
	if m.Untyped != nil {
		m.Untyped.Value = zero
	}
	if s := m.Summary; s != nil {
		s.SampleCount, s.SampleSum = proto.Uint64(0), zero
		for _, q := range s.Quantile {
			q.Value = zero
		}
	}
	if h := m.Histogram; h != nil {
		if h.SampleCount != nil {
			h.SampleCount = proto.Uint64(0)
		}
		if h.SampleCountFloat != nil {
			h.SampleCountFloat = zero
		}
		h.SampleSum = zero
		for _, b := range h.Bucket {
			if b.CumulativeCount != nil {
				b.CumulativeCount = proto.Uint64(0)
			}
			if b.CumulativeCountFloat != nil {
				b.CumulativeCountFloat = zero
			}
		}
		if h.ZeroCount != nil {
			h.ZeroCount = proto.Uint64(0)
		}
		if h.ZeroCountFloat != nil {
			h.ZeroCountFloat = zero
		}
		for i := range h.PositiveDelta {
			h.PositiveDelta[i] = 0
		}
		for i := range h.NegativeDelta {
			h.NegativeDelta[i] = 0
		}
		for i := range h.PositiveCount {
			h.PositiveCount[i] = 0
		}
		for i := range h.NegativeCount {
			h.NegativeCount[i] = 0
		}
	}
}

// checkCounts rejects histogram counts that no scraper could read back:
// negative or NaN float counts (the integer ones cannot be negative).
func checkCounts(name string, m *dto.Metric) error {
	h := m.GetHistogram()
	if h == nil {
		return nil
	}
	bad := func(v float64) bool { return v < 0 || math.IsNaN(v) }
	if h.SampleCountFloat != nil && bad(h.GetSampleCountFloat()) || h.ZeroCountFloat != nil && bad(h.GetZeroCountFloat()) {
		return fmt.Errorf("histogram %q { %s} has a negative or NaN count", name, m)
	}
	for _, b := range h.GetBucket() {
		if b.CumulativeCountFloat != nil && bad(b.GetCumulativeCountFloat()) {
			return fmt.Errorf("histogram %q { %s} has a negative or NaN bucket count", name, m)
		}
	}
	for _, c := range append(append([]float64(nil), h.GetPositiveCount()...), h.GetNegativeCount()...) {
		if bad(c) {
			return fmt.Errorf("histogram %q { %s} has a negative or NaN bucket count", name, m)
		}
	}
	return nil
}

// withTimestamp returns the version of f, a family timestampFamily built,
// that holds t and was written at written: the same bytes timestampFamily
// gives, without building the labels again.
func (f *family) withTimestamp(t, written time.Time) *family {
	return f.withValues(newFamilyAlloc([]*family{f}), []float64{timestampValue(t)}, []int32{valuePrefix(f.series[0])}, written)
}

// timestampValue is the sample value of a timestamp family holding t.
func timestampValue(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// timestampFamily builds push_time_seconds or push_failure_time_seconds for a
// group; a zero t is exposed as 0.
func timestampFamily(name, help string, g Grouping, groupKey string, t, written time.Time) *family {
	return gaugeFamily(name, help, g, groupKey, timestampValue(t), written)
}

// gaugeFamily builds a family of the gateway's own with one gauge of the
// group.
func gaugeFamily(name, help string, g Grouping, groupKey string, v float64, written time.Time) *family {
	p := &parsedFamily{name: name, help: help, hasHelp: true, typ: dto.MetricType_GAUGE, simple: []simpleMetric{{value: v}}}
	f, err := newFamily(p, g, nil, groupKey, written)
	if err == nil && len(f.series) != 1 {
		// Grouping labels are checked when a URL is parsed and a stored
		// group restored, so the one series is always valid.
		err = errors.Join(f.invalid...)
	}
	if err != nil {
		panic(fmt.Sprintf("BUG: cannot build %s for %s: %v", name, g, err))
	}
	return f
}
