package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// scrapeFormats are the exposition formats offered, in order of preference
// when the scraper has none.
var scrapeFormats = []expfmt.Format{
	expfmt.NewFormat(expfmt.TypeProtoDelim),
	expfmt.NewFormat(expfmt.TypeTextPlain),
	expfmt.NewFormat(expfmt.TypeOpenMetrics),
	expfmt.FmtOpenMetrics_0_0_1,
}

var (
	bufPool  = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	gzipPool = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
		return w
	}}
)

// Gatherer returns a prometheus.Gatherer over every stored group, one merged
// family per metric name. It is the slow path used for formats that the
// cached encodings do not cover.
func (s *Store) Gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		names := s.sortedNameList()
		mfs := make([]*dto.MetricFamily, 0, len(names))
		for _, n := range names {
			if mf := s.mergedFamily(n, nil); len(mf.Metric) > 0 {
				mfs = append(mfs, mf)
			}
		}
		return mfs, nil
	})
}

// mergedFamily decodes every stored series of name, plus the own family
// when given, into one family sorted for exposition. Must be called holding
// s.mu.
func (s *Store) mergedFamily(name string, own *dto.MetricFamily) *dto.MetricFamily {
	e := s.names[name]
	mf := &dto.MetricFamily{Name: proto.String(name), Type: e.typ.Enum()}
	if e.hasHelp {
		mf.Help = proto.String(e.help)
	}
	if own != nil {
		mf.Help = own.Help
		mf.Metric = append(mf.Metric, own.Metric...)
	}
	e.ascend(func(se *series) bool {
		m := &dto.Metric{}
		if err := unmarshalMetric(se.metric, m); err == nil {
			mf.Metric = append(mf.Metric, m)
		}
		return true
	})
	if own != nil {
		sortMetrics(mf.Metric)
	}
	return mf
}

// sortMetrics sorts metrics like client_golang: by label count, then label
// values.
func sortMetrics(ms []*dto.Metric) {
	sort.SliceStable(ms, func(i, j int) bool {
		a, b := ms[i].Label, ms[j].Label
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		for k := range a {
			if a[k].GetValue() != b[k].GetValue() {
				return a[k].GetValue() < b[k].GetValue()
			}
		}
		return false
	})
}

// flushAt is the size at which rendered output is handed to the writer.
const flushAt = 256 << 10

// render writes the own families and every stored group in format to w.
// Names are merged in sorted order; a name both own and pushed becomes one
// family. The store is read-locked for one family at a time, so writes are
// not held up by a large scrape.
func (s *Store) render(w io.Writer, own []*dto.MetricFamily, format expfmt.Format) error {
	fast := -1
	switch format.FormatType() {
	case expfmt.TypeTextPlain:
		fast = 0
	case expfmt.TypeOpenMetrics:
		fast = 1
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	flush := func(force bool) error {
		if buf.Len() >= flushAt || force && buf.Len() > 0 {
			_, err := w.Write(buf.Bytes())
			buf.Reset()
			return err
		}
		return nil
	}
	enc := expfmt.NewEncoder(buf, format)
	if fast == 1 {
		enc = &openMetricsEncoder{buf: buf}
	}
	s.mu.RLock()
	names := s.sortedNameList() // replaced, never modified, when names change
	s.mu.RUnlock()
	i, j := 0, 0
	for i < len(own) || j < len(names) {
		var mf *dto.MetricFamily
		switch {
		case j == len(names) || i < len(own) && own[i].GetName() < names[j]:
			mf = own[i]
			i++
		case i < len(own) && own[i].GetName() == names[j]:
			s.mu.RLock()
			mf = s.mergedFamily(names[j], own[i])
			s.mu.RUnlock()
			i++
			j++
		default:
			name := names[j]
			j++
			var err error
			s.mu.RLock()
			if e := s.names[name]; e != nil && len(e.series) > 0 {
				if fast < 0 {
					mf = s.mergedFamily(name, nil)
				} else {
					err = s.renderFamily(buf, name, e, fast == 1)
				}
			}
			s.mu.RUnlock()
			if err != nil {
				return err
			}
			if mf == nil {
				if err := flush(false); err != nil {
					return err
				}
				continue
			}
		}
		if err := enc.Encode(mf); err != nil {
			return err
		}
		if err := flush(false); err != nil {
			return err
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			return err
		}
	}
	return flush(true)
}

// renderFamily copies the cached lines of every series of one name. Must be
// called holding s.mu.
func (s *Store) renderFamily(buf *bytes.Buffer, name string, e *nameEntry, openMetrics bool) error {
	header := 0
	if openMetrics {
		header = 1
	}
	buf.Write(e.headers[header])
	var err error
	e.ascend(func(se *series) bool {
		switch {
		case openMetrics && se.simple:
			appendOpenMetricsLine(buf, se.text)
			return true
		case openMetrics && se.classic:
			appendOpenMetricsClassic(buf, name, se.text)
			return true
		}
		var b []byte
		if b, err = se.lines(name, e.typ, openMetrics); err != nil {
			return false
		}
		buf.Write(b)
		return true
	})
	return err
}

// appendOpenMetricsLine writes the OpenMetrics form of a simple series'
// text line: the same line with the value written as OpenMetrics floats
// are, with ".0" after a number that has neither a point nor an exponent.
func appendOpenMetricsLine(buf *bytes.Buffer, text []byte) {
	line := text[:len(text)-1]
	sp := bytes.LastIndexByte(line, ' ')
	value := line[sp+1:]
	buf.Write(line)
	if bytes.ContainsAny(value, ".eN") || bytes.HasSuffix(value, []byte("Inf")) {
		buf.WriteByte('\n')
		return
	}
	buf.WriteString(".0\n")
}

// openMetricsEncoder writes families in OpenMetrics with the le and
// quantile values of the text format (see textBounds).
type openMetricsEncoder struct {
	buf *bytes.Buffer
	tmp bytes.Buffer
}

func (e *openMetricsEncoder) Encode(mf *dto.MetricFamily) error {
	e.tmp.Reset()
	if _, err := expfmt.MetricFamilyToOpenMetrics(&e.tmp, mf); err != nil {
		return err
	}
	e.buf.Write(textBounds(e.tmp.Bytes()))
	return nil
}

func (e *openMetricsEncoder) Close() error {
	_, err := expfmt.FinalizeOpenMetrics(e.buf)
	return err
}

var (
	leLabel       = []byte(`le="`)
	quantileLabel = []byte(`quantile="`)
)

// textBounds rewrites the le and quantile label values of OpenMetrics lines
// in the text format's float form ("1", not "1.0"). Prometheus 2 stores
// these values as they are sent, so this keeps the series a Prometheus
// scraping with OpenMetrics stores identical to those it stores from the
// text format, as from the Pushgateway.
func textBounds(b []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i < len(b); i++ {
		if b[i] != '{' && b[i] != ',' {
			continue
		}
		var name []byte
		switch {
		case bytes.HasPrefix(b[i+1:], leLabel):
			name = leLabel
		case bytes.HasPrefix(b[i+1:], quantileLabel):
			name = quantileLabel
		default:
			continue
		}
		start := i + 1 + len(name)
		end := bytes.IndexByte(b[start:], '"')
		if end < 0 {
			break
		}
		end += start
		v, err := strconv.ParseFloat(string(b[start:end]), 64)
		if err != nil {
			continue
		}
		text := appendFloat(nil, v)
		if bytes.Equal(text, b[start:end]) {
			continue
		}
		out = append(out, b[last:start]...)
		out = append(out, text...)
		last = end
		i = end
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// anyFloatCounts reports a histogram with fractional counts among mfs.
func anyFloatCounts(mfs []*dto.MetricFamily) bool {
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_HISTOGRAM && mf.GetType() != dto.MetricType_GAUGE_HISTOGRAM {
			continue
		}
		for _, m := range mf.Metric {
			if hasFloatCounts(m) {
				return true
			}
		}
	}
	return false
}

// appendOpenMetricsClassic writes the OpenMetrics form of the text lines of
// a classic summary or histogram: bucket and count values become integers,
// sums and quantile values OpenMetrics floats; names and labels are the
// same, le and quantile values already in the form textBounds gives.
func appendOpenMetricsClassic(buf *bytes.Buffer, name string, text []byte) {
	for len(text) > 0 {
		i := bytes.IndexByte(text, '\n')
		line := text[:i]
		text = text[i+1:]
		sp := bytes.LastIndexByte(line, ' ')
		buf.Write(line[:sp+1])
		value := line[sp+1:]
		suffix := line[len(name):]
		if j := bytes.IndexByte(suffix, '{'); j >= 0 {
			suffix = suffix[:j]
		} else if j := bytes.IndexByte(suffix, ' '); j >= 0 {
			suffix = suffix[:j]
		}
		if string(suffix) == "_bucket" || string(suffix) == "_count" {
			if v, err := strconv.ParseFloat(string(value), 64); err == nil {
				buf.WriteString(strconv.FormatUint(uint64(v), 10))
				buf.WriteByte('\n')
				continue
			}
		}
		buf.Write(value)
		if !bytes.ContainsAny(value, ".eN") && !bytes.HasSuffix(value, []byte("Inf")) {
			buf.WriteString(".0")
		}
		buf.WriteByte('\n')
	}
}

// lines returns the series in the text format or, building and caching it on
// first use, in OpenMetrics.
func (se *series) lines(name string, typ dto.MetricType, openMetrics bool) ([]byte, error) {
	if !openMetrics {
		return se.text, nil
	}
	if p := se.openMetrics.Load(); p != nil {
		return *p, nil
	}
	m := &dto.Metric{}
	if err := unmarshalMetric(se.metric, m); err != nil {
		return nil, err
	}
	b, err := encodeSeries(name, typ, m, true)
	if err != nil {
		return nil, err
	}
	b = textBounds(b)
	se.openMetrics.Store(&b)
	return b, nil
}

// ExpositionHandler serves the own metrics of gatherer and every stored group
// in the format the scraper asks for, gzip-compressed when it accepts gzip.
func (s *Store) ExpositionHandler(gatherer prometheus.Gatherer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		own, err := gatherer.Gather()
		if err != nil {
			http.Error(w, fmt.Sprintf("An error has occurred while serving metrics:\n\n%s", err), http.StatusInternalServerError)
			return
		}
		format := expfmt.NegotiateAccept(r.Header, scrapeFormats...)
		s.mu.RLock()
		floats := s.floatSeries
		s.mu.RUnlock()
		if format.FormatType() == expfmt.TypeOpenMetrics && (floats > 0 || anyFloatCounts(own)) {
			// OpenMetrics 1.0 has no fractional histogram counts: fall
			// back to the text format, which every scraper accepts.
			format = expfmt.NegotiateAccept(http.Header{}, scrapeFormats...)
		}
		h := w.Header()
		h.Set("Content-Type", string(format))
		var out io.Writer = w
		if acceptsGzip(r) {
			h.Set("Content-Encoding", "gzip")
			h.Add("Vary", "Accept-Encoding")
			zw := gzipPool.Get().(*gzip.Writer)
			zw.Reset(w)
			defer func() {
				_ = zw.Close()
				gzipPool.Put(zw)
			}()
			out = zw
		}
		if err := s.render(out, own, format); err != nil {
			// The status is sent already: the scraper sees a cut-off body.
			s.logger.Error("cannot serve metrics", "err", err)
		}
	})
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			return true
		}
	}
	return false
}
