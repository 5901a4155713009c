package gateway

import (
	"bytes"
	"math"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
)

// groupedValues locates the values of the metrics of a summary or histogram
// family while a template is made: metric j of the parsed family takes
// parts[j]+2 values from start[j].
type groupedValues struct {
	start, parts []int
}

// position returns where the value of the line of metric j with role goes
// (see textLine).
func (gv groupedValues) position(j, role int) int {
	switch role {
	case roleSum:
		return gv.start[j] + gv.parts[j]
	case roleCount:
		return gv.start[j] + gv.parts[j] + 1
	}
	return gv.start[j] + role
}

// groupedShape describes how the template writes the values of the summary
// or histogram family f, built from p, and where the values of p's metrics
// go. ok is false for a family it cannot reproduce: one with native or
// fractional counts, exemplars, created timestamps, a metric without its
// _sum or _count line, or one whose encodings the shape does not give back
// byte for byte.
func groupedShape(p *parsedFamily, f *family) (shape familyShape, gv groupedValues, ok bool) {
	if f.typ != dto.MetricType_SUMMARY && f.typ != dto.MetricType_HISTOGRAM || len(f.series) != len(p.metrics) {
		return familyShape{}, groupedValues{}, false
	}
	pos := make(map[uint64]int, len(f.series))
	for i, se := range f.series {
		pos[se.id] = i
	}
	// The metric of every series; the parser's metrics carry the
	// sanitised labels newFamily gave them.
	metrics := make([]*dto.Metric, len(f.series))
	metricOf := make([]int, len(p.metrics))
	var labels []label
	for j, m := range p.metrics {
		labels = labels[:0]
		for _, lp := range m.Label {
			labels = append(labels, label{lp.GetName(), lp.GetValue()})
		}
		i, found := pos[seriesID(f.name, labels)]
		if !found || metrics[i] != nil {
			return familyShape{}, groupedValues{}, false
		}
		metrics[i], metricOf[j] = m, i
	}
	shape.grouped = make([]groupedSeries, len(f.series))
	start := make([]int, len(f.series))
	var vals []float64
	for i, se := range f.series {
		m := metrics[i]
		if !se.classic || se.floatCounts {
			return familyShape{}, groupedValues{}, false
		}
		field := protowire.Number(7) // Metric.histogram
		vals = vals[:0]
		boundsStart := len(shape.bounds)
		switch h, s := m.GetHistogram(), m.GetSummary(); {
		case h != nil && h.SampleCount != nil && h.SampleSum != nil:
			for _, b := range h.Bucket {
				shape.bounds = append(shape.bounds, b.GetUpperBound())
				vals = append(vals, float64(b.GetCumulativeCount()))
			}
			vals = append(vals, h.GetSampleSum(), float64(h.GetSampleCount()))
		case s != nil && s.SampleCount != nil && s.SampleSum != nil:
			field = 4 // Metric.summary
			for _, q := range s.Quantile {
				shape.bounds = append(shape.bounds, q.GetQuantile())
				vals = append(vals, q.GetValue())
			}
			vals = append(vals, s.GetSampleSum(), float64(s.GetSampleCount()))
		default:
			return familyShape{}, groupedValues{}, false
		}
		parts := len(vals) - 2
		labelsLen, found := fieldOffset(se.metric(), field)
		lines := bytes.Count(se.text(), []byte{'\n'})
		if !found || lines != parts+2 && (lines != parts+3 || field != 7) {
			return familyShape{}, groupedValues{}, false
		}
		gs := groupedSeries{parts: int32(parts), labelsLen: int32(labelsLen), infAdded: lines == parts+3}
		shape.grouped[i] = gs
		start[i] = shape.values
		shape.values += parts + 2
		prefixesStart := len(shape.prefixes)
		rest := se.text()
		var num [32]byte
		for j := range lines {
			end := bytes.IndexByte(rest, '\n')
			value := appendFloat(num[:0], gs.lineValue(j, vals))
			if !bytes.HasSuffix(rest[:end], value) {
				return familyShape{}, groupedValues{}, false
			}
			shape.prefixes = append(shape.prefixes, int32(end-len(value)))
			rest = rest[end+1:]
		}
		// The shape must give back the encodings it was made from.
		enc, textLen, ok := appendGroupedSeries(nil, se, field == 7, gs, shape.prefixes[prefixesStart:], shape.bounds[boundsStart:], vals)
		if !ok || !bytes.Equal(enc[:textLen], se.text()) || !bytes.Equal(enc[textLen:], se.metric()) {
			return familyShape{}, groupedValues{}, false
		}
	}
	gv = groupedValues{start: make([]int, len(p.metrics)), parts: make([]int, len(p.metrics))}
	for j, i := range metricOf {
		gv.start[j], gv.parts[j] = start[i], int(shape.grouped[i].parts)
	}
	return shape, gv, true
}

// fieldOffset returns the offset of the first field number n in the
// protobuf message b.
func fieldOffset(b []byte, n protowire.Number) (int, bool) {
	for off := 0; off < len(b); {
		num, typ, tagLen := protowire.ConsumeTag(b[off:])
		if tagLen < 0 {
			return 0, false
		}
		if num == n {
			return off, true
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, b[off+tagLen:])
		if valueLen < 0 {
			return 0, false
		}
		off += tagLen + valueLen
	}
	return 0, false
}

// lineValue returns the value of text line j of the series, given its
// values: the quantiles or buckets, the +Inf bucket it adds, the sum, the
// count.
func (gs groupedSeries) lineValue(j int, vals []float64) float64 {
	parts := int(gs.parts)
	switch {
	case j < parts:
		return vals[j]
	case gs.infAdded && j == parts:
		return vals[parts+1]
	case gs.infAdded && j == parts+1 || !gs.infAdded && j == parts:
		return vals[parts]
	}
	return vals[parts+1]
}

// withGroupedValues returns a copy of the summary or histogram family f,
// written at now, whose series carry values laid out as sh says, or nil
// when a count is not a whole number that keeps the series classic.
func (f *family) withGroupedValues(a *familyAlloc, values []float64, sh *familyShape, now time.Time) *family {
	n, structs := a.copyAt(f, now)
	size := 0
	for _, old := range f.series {
		size += len(old.text()) + len(old.metric()) + 16
	}
	enc := make([]byte, 0, size+8*len(sh.prefixes))
	vs, ps, bs := 0, 0, 0
	for i, old := range f.series {
		gs := sh.grouped[i]
		parts := int(gs.parts)
		lines := parts + 2
		if gs.infAdded {
			lines++
		}
		start := len(enc)
		var textLen int
		var ok bool
		enc, textLen, ok = appendGroupedSeries(enc, old, f.typ == dto.MetricType_HISTOGRAM, gs, sh.prefixes[ps:ps+lines], sh.bounds[bs:bs+parts], values[vs:vs+parts+2])
		if !ok {
			return nil
		}
		se := &structs[i]
		se.key, se.groupKey, se.id, se.classic = old.key, old.groupKey, old.id, true
		se.setEncoding(enc[start:len(enc):len(enc)], textLen)
		vs, ps, bs = vs+parts+2, ps+lines, bs+parts
	}
	return n
}

// appendGroupedSeries appends to enc the text lines and then the protobuf
// encoding of a summary or histogram series of the shape of old with
// values vals (see groupedSeries), and returns the length of the text. ok is
// false when a count is not a whole number below 2^53; vals is modified.
func appendGroupedSeries(enc []byte, old *series, isHistogram bool, gs groupedSeries, prefixes []int32, bounds, vals []float64) (out []byte, textLen int, ok bool) {
	parts := int(gs.parts)
	// count checks the count at k and stores it as the parser does: -0
	// is 0.
	count := func(k int) bool {
		c := vals[k]
		if c < 0 || c >= maxExactCount || c != math.Trunc(c) {
			return false
		}
		vals[k] = float64(uint64(c))
		return true
	}
	if !count(parts + 1) {
		return enc, 0, false
	}
	for k := range parts {
		if isHistogram && !count(k) {
			return enc, 0, false
		}
	}
	start := len(enc)
	rest := old.text()
	for j, prefix := range prefixes {
		enc = append(enc, rest[:prefix]...)
		enc = appendFloat(enc, gs.lineValue(j, vals))
		enc = append(enc, '\n')
		rest = rest[int(prefix)+bytes.IndexByte(rest[prefix:], '\n')+1:]
	}
	textLen = len(enc) - start
	enc = append(enc, old.metric()[:gs.labelsLen]...)
	return appendGroupedProto(enc, isHistogram, bounds, vals), textLen, true
}

// appendGroupedProto appends the Metric.histogram or Metric.summary field
// of a classic series with bounds and vals, as proto.Marshal writes it.
func appendGroupedProto(b []byte, isHistogram bool, bounds, vals []float64) []byte {
	parts := len(bounds)
	count := uint64(vals[parts+1])
	const fixed = 1 + 8 // tag and value of a double
	size := 1 + protowire.SizeVarint(count) + fixed
	for k := range parts {
		if isHistogram {
			size += 1 + protowire.SizeBytes(1+protowire.SizeVarint(uint64(vals[k]))+fixed)
		} else {
			size += 1 + protowire.SizeBytes(2*fixed)
		}
	}
	field := protowire.Number(4) // Metric.summary
	if isHistogram {
		field = 7 // Metric.histogram
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	// sample_count = 1, sample_sum = 2, then bucket or quantile = 3.
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, count)
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(vals[parts]))
	for k, bound := range bounds {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		if isHistogram {
			// cumulative_count = 1, upper_bound = 2.
			c := uint64(vals[k])
			b = protowire.AppendVarint(b, uint64(1+protowire.SizeVarint(c)+fixed))
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, c)
			b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, math.Float64bits(bound))
			continue
		}
		// quantile = 1, value = 2.
		b = protowire.AppendVarint(b, 2*fixed)
		b = protowire.AppendTag(b, 1, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(bound))
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(vals[k]))
	}
	return b
}
