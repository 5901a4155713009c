package gateway

import (
	"bytes"
	"encoding/binary"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"
	"weak"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// bodyTemplate remembers how the last text body pushed to a group was
// encoded. A job pushes the same body every run with other sample values;
// a body that differs from the template's only in its values is encoded by
// copying the labels of the previous series and writing the new values,
// without parsing, sanitising or hashing. Summaries and classic histograms
// are encoded the same way while their counts stay whole numbers; a family
// the template cannot reproduce is parsed again from its lines. A template
// is immutable.
type bodyTemplate struct {
	// lines describe every line of the body, shared by the templates that
	// follow from this one.
	lines *templateLines
	// families are the families built from the body that the template
	// encodes; their series give the labels of the next push.
	families []*family
	// shapes say, for every family of families, how its values are
	// written; the templates that follow share them.
	shapes []familyShape
	// pushTime is the push_time_seconds family of the push, which the
	// next push's is written from.
	pushTime *family
}

// familyShape says how the values of one family of a template are written
// into its series.
type familyShape struct {
	// values is the number of sample values the family takes.
	values int
	// prefixes are the lengths of the text lines before their values: one
	// per series of a simple family, one per text line of every series of
	// a summary or histogram.
	prefixes []int32
	// grouped describes every series of a summary or histogram; nil for a
	// simple family.
	grouped []groupedSeries
	// bounds are the quantiles or bucket bounds of every series of a
	// summary or histogram, one series after the other.
	bounds []float64
}

// groupedSeries is the shape of one summary or histogram series. It takes
// parts+2 values: its quantile values or bucket counts, its sum and its
// count.
type groupedSeries struct {
	parts int32
	// labelsLen is the length of the labels that begin the protobuf
	// encoding of the series.
	labelsLen int32
	// infAdded marks a histogram pushed without a +Inf bucket, whose text
	// has one with the count.
	infAdded bool
}

// templateLines are the lines of a template's body.
type templateLines struct {
	lines []templateLine
	// families are the names of the body's families, sorted: the order in
	// which a group pushed with the body is persisted.
	families []string
}

// templateLine is one line of a template's body.
type templateLine struct {
	// hash is the xxhash of the line, or of a sample line up to its
	// value, and length the number of bytes hashed.
	hash   uint64
	length int32
	// family and pos locate the value of a sample line of a family the
	// template encodes: the value at pos of families[family].
	family, pos int32
	// sample marks a sample line, whose value follows the hashed bytes.
	sample bool
	// parsed marks a line of a family that is parsed again on every push.
	parsed bool
}

// textBody is a text push body prepared for its group: what the template
// encoded and what is left to build.
type textBody struct {
	// key is the grouping key of the group the body is for.
	key string
	now time.Time
	// families were encoded through the template.
	families []*family
	// parsed are the families still to build: all of them without a
	// template, those it does not encode with one.
	parsed map[string]*parsedFamily
	// lines and body are kept, without a template, to make one.
	lines []textLine
	body  []byte
	// template is the template the body matched.
	template *bodyTemplate
}

// maxTemplateLines bounds the lines a template describes.
const maxTemplateLines = 1 << 20

// prepareTextOrParse prepares a text body for submitText, or, when the
// fast parser does not take it, parses it with expfmt for push. body must
// stay unchanged until submitText returns.
func (s *Store) prepareTextOrParse(grouping Grouping, body []byte) (*textBody, map[string]*parsedFamily, error) {
	if tb, ok := s.prepareText(grouping.Key(), body); ok {
		return tb, nil, nil
	}
	mfs, err := parseTextSlow(body)
	return nil, mfs, err
}

// prepareText parses a text body for the group with key, or encodes it
// through the group's template. ok is false when the fast parser does not
// take the body.
func (s *Store) prepareText(key string, body []byte) (tb *textBody, ok bool) {
	tb = &textBody{key: key, now: s.now(), body: body}
	if v, found := s.templates.Load(key); found {
		t := v.(*bodyTemplate)
		if families, rest, ok := t.encode(body, tb.now); ok {
			if len(rest) == 0 {
				tb.families, tb.template = families, t
				return tb, true
			}
			if parsed, ok := parseTextFast(rest); ok {
				tb.families, tb.parsed, tb.template = families, parsed, t
				return tb, true
			}
		}
	}
	parsed, ok := parseTextLines(body, &tb.lines)
	if !ok {
		return nil, false
	}
	tb.parsed = parsed
	return tb, true
}

// submitText pushes a prepared text body like push. The store keeps the
// body's template for the group when it applies the push, so that a group
// never gets a template after it was deleted or its push refused.
func (s *Store) submitText(grouping Grouping, tb *textBody, replace, wait bool, ttl *time.Duration) error {
	var prevPushTime *family
	if tb.template != nil {
		prevPushTime = tb.template.pushTime
	}
	req := s.newPushRequest(grouping, tb.key, replace, ttl, tb.now, prevPushTime)
	for _, f := range tb.families {
		req.families[f.name] = f
	}
	if err := s.addParsed(req, tb.parsed); err != nil {
		return err
	}
	switch {
	case req.reject != nil:
	case tb.template != nil:
		req.template = &bodyTemplate{lines: tb.template.lines, families: tb.families, shapes: tb.template.shapes, pushTime: req.pushTimeFamily}
	default:
		req.template = newBodyTemplate(tb.body, tb.lines, tb.parsed, req, grouping)
	}
	return s.write(req, wait)
}

// newBodyTemplate describes how body, parsed into lines and parsed, was
// built into the families of req, or returns nil when the body is not one
// a template can reproduce: one that pushes the gateway's own families, or
// any family with a problem the consistency check would report.
func newBodyTemplate(body []byte, lines []textLine, parsed map[string]*parsedFamily, req *writeRequest, grouping Grouping) *bodyTemplate {
	if len(lines) > maxTemplateLines {
		return nil
	}
	tls := make([]templateLine, len(lines))
	t := &bodyTemplate{pushTime: req.pushTimeFamily}
	// plans say where the values of every encoded family go.
	plans := make(map[*parsedFamily]*valuePlan, len(parsed))
	// The parser checks every _count line of a summary or histogram, the
	// template only the value it keeps: a family with a part set by two
	// lines is parsed again on every push.
	type part struct {
		family       *parsedFamily
		metric, role int
	}
	seen := make(map[part]bool)
	repeated := make(map[*parsedFamily]bool)
	for _, l := range lines {
		if l.family != nil && l.grouped >= 0 {
			pt := part{l.family, l.grouped, l.role}
			repeated[l.family] = repeated[l.family] || seen[pt]
			seen[pt] = true
		}
	}
	var gl []label
	var scratch []label
	// Families in name order, so that equal bodies give equal lines.
	names := make([]string, 0, len(parsed))
	for name := range parsed {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p, f := parsed[name], req.families[name]
		if f == nil || len(f.invalid) > 0 || len(p.metrics) > 0 && len(p.simple) > 0 {
			return nil
		}
		var shape familyShape
		plan := &valuePlan{family: len(t.families)}
		if len(p.simple) > 0 {
			if len(f.series) != len(p.simple) {
				return nil
			}
			plan.simple = make(map[uint64]int, len(f.series))
			shape.values = len(f.series)
			shape.prefixes = make([]int32, len(f.series))
			for i, se := range f.series {
				plan.simple[se.id] = i
				shape.prefixes[i] = valuePrefix(se)
			}
		} else {
			var ok bool
			if shape, plan.grouped, ok = groupedShape(p, f); !ok || repeated[p] {
				continue // parsed again on every push
			}
		}
		plans[p] = plan
		t.families = append(t.families, f)
		t.shapes = append(t.shapes, shape)
	}
	start := 0
	for i, l := range lines {
		line := body[start:l.end]
		tl := &tls[i]
		tl.length = int32(len(line))
		if l.value >= 0 {
			tl.sample, tl.length = true, int32(l.value-start)
		}
		tl.hash = xxhash.Sum64(line[:tl.length])
		if l.family != nil {
			plan := plans[l.family]
			tl.parsed = plan == nil
			switch {
			case plan == nil || !tl.sample:
			case plan.simple != nil:
				if gl == nil {
					gl = groupingLabels(grouping)
				}
				scratch = sanitizeSimple(scratch[:0], l.family.simple[l.simple].labels, gl)
				pos, ok := plan.simple[seriesID(l.family.name, scratch)]
				if !ok {
					return nil
				}
				tl.family, tl.pos = int32(plan.family), int32(pos)
			default:
				tl.family, tl.pos = int32(plan.family), int32(plan.grouped.position(l.grouped, l.role))
			}
		}
		start = l.end + 1
	}
	t.lines = sharedLines.share(tls, names)
	return t
}

// valuePlan says where the sample values of one family go while a template
// is made: the family's index in the template and, for a simple family, the
// position of each series by id, else the values of each metric.
type valuePlan struct {
	family  int
	simple  map[uint64]int
	grouped groupedValues
}

// maxSharedLines bounds the distinct line lists sharedLines keeps.
const maxSharedLines = 1 << 12

// sharedLines keeps one copy of equal template lines: groups that push
// the same kind of body, as many runs of one job do, share them.
var sharedLines = lineLists{m: map[uint64]weak.Pointer[templateLines]{}}

// lineLists maps the hash of line lists to the lists templates use. It does
// not keep a list alive: an entry goes once no template refers to its list.
type lineLists struct {
	sync.Mutex
	m map[uint64]weak.Pointer[templateLines]
}

// share returns a list equal to lines with the family names families, the
// one kept when there is one.
func (ll *lineLists) share(lines []templateLine, families []string) *templateLines {
	var d xxhash.Digest
	var b [22]byte
	for _, l := range lines {
		binary.LittleEndian.PutUint64(b[0:], l.hash)
		binary.LittleEndian.PutUint32(b[8:], uint32(l.length))
		binary.LittleEndian.PutUint32(b[12:], uint32(l.family))
		binary.LittleEndian.PutUint32(b[16:], uint32(l.pos))
		b[20], b[21] = boolByte(l.sample), boolByte(l.parsed)
		_, _ = d.Write(b[:])
	}
	h := d.Sum64()
	ll.Lock()
	defer ll.Unlock()
	kept, found := ll.m[h]
	tl := &templateLines{lines: lines, families: families}
	if k := kept.Value(); k != nil {
		if slices.Equal(k.lines, lines) && slices.Equal(k.families, families) {
			return k
		}
		return tl // a hash collision: the first list keeps the entry
	}
	if !found && len(ll.m) >= maxSharedLines {
		return tl
	}
	w := weak.Make(tl)
	ll.m[h] = w
	runtime.AddCleanup(tl, ll.forget, sharedEntry{h, w})
	return tl
}

// sharedEntry names the entry of a list in lineLists.
type sharedEntry struct {
	hash uint64
	list weak.Pointer[templateLines]
}

// forget removes the entry of a list no template refers to any more,
// unless another list has taken its place.
func (ll *lineLists) forget(e sharedEntry) {
	ll.Lock()
	defer ll.Unlock()
	if ll.m[e.hash] == e.list {
		delete(ll.m, e.hash)
	}
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// encode encodes body through t: the new versions of the families t
// encodes, with their time set to now, and the lines of the other families,
// to be parsed. ok is false when body differs from t's in more than sample
// values, has a value that is not a number, or a count t cannot write.
func (t *bodyTemplate) encode(body []byte, now time.Time) (families []*family, parsed []byte, ok bool) {
	offsets := make([]int, len(t.families)+1)
	for i, sh := range t.shapes {
		offsets[i+1] = offsets[i] + sh.values
	}
	values := make([]float64, offsets[len(t.families)])
	start := 0
	for _, tl := range t.lines.lines {
		end := bytes.IndexByte(body[start:], '\n') + start
		if end < start {
			return nil, nil, false
		}
		line := body[start:end]
		n := int(tl.length)
		if len(line) < n || !tl.sample && len(line) != n || xxhash.Sum64(line[:n]) != tl.hash {
			return nil, nil, false
		}
		if tl.sample {
			value := line[n:]
			if len(value) == 0 || containsByte(value, ' ', '\t', '\r') {
				return nil, nil, false
			}
			if !tl.parsed {
				v, err := parseSampleFloat(string(value))
				if err != nil {
					return nil, nil, false
				}
				values[offsets[tl.family]+int(tl.pos)] = v
			}
		}
		if tl.parsed {
			parsed = append(parsed, body[start:end+1]...)
		}
		start = end + 1
	}
	if start != len(body) {
		return nil, nil, false
	}
	families = make([]*family, len(t.families))
	a := newFamilyAlloc(t.families)
	for i, f := range t.families {
		vs, sh := values[offsets[i]:offsets[i+1]], &t.shapes[i]
		if sh.grouped == nil {
			families[i] = f.withValues(a, vs, sh.prefixes, now)
		} else if families[i] = f.withGroupedValues(a, vs, sh, now); families[i] == nil {
			return nil, nil, false
		}
	}
	return families, parsed, true
}

// maxFloatLen is the longest value appendFloat writes, as in
// -1.2345678901234567e-308.
const maxFloatLen = 24

// familyAlloc hands out the family and series structs of the families
// built for one push from three allocations instead of three for each
// family, and the scratch space withValues formats values in. The structs
// of one push stay in memory while any of them is in use, and with them the
// encodings and OpenMetrics lines their series point to: after a push that
// replaces only some of them (a POST of another body), the replaced
// families' memory is kept until the rest are replaced too, at most one
// push's worth for each family still stored (a dropped index slot keeps no
// series, so that this does not chain from push to push). A push of the
// same body, the case templates serve, replaces them all.
type familyAlloc struct {
	families []family
	ptrs     []*series
	structs  []series
	nums     []byte
	ends     []int
}

// newFamilyAlloc returns a familyAlloc for copies of fs.
func newFamilyAlloc(fs []*family) *familyAlloc {
	n, most := 0, 0
	for _, f := range fs {
		n += len(f.series)
		most = max(most, len(f.series))
	}
	return &familyAlloc{
		families: make([]family, len(fs)),
		ptrs:     make([]*series, n),
		structs:  make([]series, n),
		nums:     make([]byte, 0, most*maxFloatLen),
		ends:     make([]int, 0, most),
	}
}

// copyAt returns a copy of f written at now whose series are the structs,
// one for each of f's, still empty: withValues and withGroupedValues give
// them the identities of f's series and new encodings. a must have been
// made for f, among others.
func (a *familyAlloc) copyAt(f *family, now time.Time) (*family, []series) {
	k := len(f.series)
	n, ptrs, structs := &a.families[0], a.ptrs[:k:k], a.structs[:k:k]
	a.families, a.ptrs, a.structs = a.families[1:], a.ptrs[k:], a.structs[k:]
	*n = family{name: f.name, help: f.help, hasHelp: f.hasHelp, typ: f.typ, time: now, series: ptrs}
	for i := range structs {
		ptrs[i] = &structs[i]
	}
	return n, structs
}

// withValues returns a copy of the simple family f, written at now, whose
// series carry values, in the order of f's series; prefixes are the lengths
// of their text lines before the value.
func (f *family) withValues(a *familyAlloc, values []float64, prefixes []int32, now time.Time) *family {
	n, structs := a.copyAt(f, now)
	// The formatted values, one after the other, and where each ends.
	nums := slices.Grow(a.nums[:0], len(f.series)*maxFloatLen)
	ends := slices.Grow(a.ends[:0], len(f.series))
	size := 0
	for i, old := range f.series {
		before := len(nums)
		nums = appendFloat(nums, values[i])
		ends = append(ends, len(nums))
		size += int(prefixes[i]) + len(nums) - before + 1 + len(old.metric())
	}
	enc := make([]byte, 0, size)
	numStart := 0
	for i, old := range f.series {
		start := len(enc)
		num := nums[numStart:ends[i]]
		numStart = ends[i]
		enc = append(enc, old.text()[:prefixes[i]]...)
		enc = append(enc, num...)
		enc = append(enc, '\n')
		textEnd := len(enc)
		enc = append(enc, old.metric()[:len(old.metric())-protowire.SizeFixed64()]...)
		enc = protowire.AppendFixed64(enc, math.Float64bits(values[i]))
		se := &structs[i]
		se.key, se.groupKey, se.id, se.simple = old.key, old.groupKey, old.id, true
		se.integral = isIntegralText(num)
		se.setEncoding(enc[start:len(enc):len(enc)], textEnd-start)
	}
	a.nums, a.ends = nums, ends
	return n
}

// valuePrefix returns the length of a simple series' text line before its
// value.
func valuePrefix(se *series) int32 {
	var num [maxFloatLen]byte
	return int32(len(se.text()) - len(appendFloat(num[:0], simpleMetricValue(se))) - 1)
}

// simpleMetricValue returns the value of a simple series: the fixed64 that
// appendSimpleMetricProto writes last.
func simpleMetricValue(se *series) float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64(se.metric()[len(se.metric())-protowire.SizeFixed64():]))
}
