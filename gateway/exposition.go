package gateway

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// scrapeFormats are the exposition formats offered, in order of preference
// when the scraper has none.
var scrapeFormats = []expfmt.Format{
	expfmt.NewFormat(expfmt.TypeProtoDelim),
	expfmt.NewFormat(expfmt.TypeProtoText),
	expfmt.NewFormat(expfmt.TypeProtoCompact),
	expfmt.NewFormat(expfmt.TypeTextPlain),
	expfmt.NewFormat(expfmt.TypeOpenMetrics),
	expfmt.FmtOpenMetrics_0_0_1,
}

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
		if err := unmarshalMetric(se.metric(), m); err == nil {
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

// cachedForm returns the form in which format is rendered from the chunk
// caches, compressed when gz, or -1 for a format written from decoded
// families.
func cachedForm(format expfmt.Format, gz bool) int {
	form := -1
	switch format.FormatType() {
	case expfmt.TypeTextPlain:
		form = formText
	case expfmt.TypeOpenMetrics:
		form = formOpenMetrics
	}
	if form >= 0 && gz {
		form += formTextDeflate
	}
	return form
}

// scrapeNames returns the sorted stored names a scrape exposes: every one,
// or when only is not nil just those it holds.
func (s *Store) scrapeNames(only map[string]bool) []string {
	s.mu.RLock()
	names := s.sortedNameList() // replaced, never modified, when names change
	s.mu.RUnlock()
	if only != nil {
		names = slices.DeleteFunc(slices.Clone(names), func(name string) bool { return !only[name] })
	}
	return names
}

// render writes the own families and the stored families of names in
// format to bw and closes it; own holds no names that the scrape's filter
// leaves out. Names are merged in sorted order; a name both own and pushed
// becomes one family, rendered afresh. The store is read-locked for one
// family at a time, so writes are not held up by a large scrape. ahead,
// when not nil, is the scrape's helper, started over names in format's
// cached form; render stops it before it returns.
func (s *Store) render(bw *bodyWriter, own []*dto.MetricFamily, format expfmt.Format, names []string, ahead *fillAhead) error {
	defer ahead.finish()
	form := cachedForm(format, bw.gzip)
	enc := expfmt.NewEncoder(bw, format)
	if format.FormatType() == expfmt.TypeOpenMetrics {
		enc = &openMetricsEncoder{w: bw}
	}
	r := getRenderer()
	defer putRenderer(r)
	ahead.ownKnown(own)
	r.ahead = ahead
	i, j := 0, 0
	for i < len(own) || j < len(names) {
		var mf *dto.MetricFamily
		switch {
		case j == len(names) || i < len(own) && own[i].GetName() < names[j]:
			mf = own[i]
			i++
		case i < len(own) && own[i].GetName() == names[j]:
			ahead.reached(j)
			mf = s.mergedWithOwn(names[j], own[i])
			i++
			j++
		default:
			ahead.reached(j)
			var err error
			mf, err = s.renderStored(bw, r, names[j], form)
			j++
			if err == nil {
				err = bw.err
			}
			if err != nil {
				return err
			}
			if mf == nil {
				continue
			}
		}
		if err := enc.Encode(mf); err != nil {
			return err
		}
		if bw.err != nil {
			return bw.err
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			return err
		}
	}
	return bw.Close()
}

// mergedWithOwn returns the stored family name merged with the own family
// of that name, or own when name has gone since the scrape listed it.
func (s *Store) mergedWithOwn(name string, own *dto.MetricFamily) *dto.MetricFamily {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.names[name] == nil {
		return own
	}
	return s.mergedFamily(name, own)
}

// renderStored writes the stored family name in form from the chunk caches
// into bw, or, for a form of -1, returns it decoded for an encoder; it does
// neither when name has no series left. The read lock is released however
// it returns, so that a panic recovered by the HTTP server cannot leave
// every write waiting.
func (s *Store) renderStored(bw *bodyWriter, r *renderer, name string, form int) (*dto.MetricFamily, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.names[name]
	switch {
	case e == nil || e.len() == 0:
		return nil, nil
	case form < 0:
		return s.mergedFamily(name, nil), nil
	}
	return nil, r.family(bw, name, e, form)
}

// renderer builds the renderings of chunks and headers missing from their
// caches during one scrape.
type renderer struct {
	fw    *flate.Writer
	plain bytes.Buffer
	seg   bytes.Buffer
	// series holds the series of the chunk being rendered.
	series [maxChunk]*series
	// touched keeps the loads of renderChunk's second pass.
	touched byte
	// unstored is the plain rendering that cached returned last without
	// storing it.
	unstored rendering
	// ahead, when not nil, is the scrape's helper building compressed
	// renderings alongside.
	ahead *fillAhead
}

// renderers keeps the renderers of two concurrent scrapes and their
// helpers.
var renderers = newFreeList(4, func() *renderer { return new(renderer) })

func getRenderer() *renderer {
	r := renderers.get()
	r.fw = flateWriters.get()
	return r
}

func putRenderer(r *renderer) {
	r.ahead = nil
	r.unstored = rendering{}
	// A chunk that failed to render may have left its series here.
	clear(r.series[:])
	r.fw.Reset(nil)
	flateWriters.put(r.fw)
	r.fw = nil
	if r.plain.Cap() > 2*flushAt || r.seg.Cap() > 2*flushAt {
		// Keeping the buffers of an unusually large chunk is not worth
		// their memory.
		r.plain, r.seg = bytes.Buffer{}, bytes.Buffer{}
	}
	renderers.put(r)
}

// family writes the header and every chunk of one name in form, using and
// filling their caches. Must be called holding s.mu for reading.
func (r *renderer) family(bw *bodyWriter, name string, e *nameEntry, form int) error {
	openMetrics := form == formOpenMetrics || form == formOpenMetricsDeflate
	header := 0
	if openMetrics {
		header = 1
	}
	hr, err := r.cached(&e.headerCache, form, func(buf *bytes.Buffer) error {
		buf.Write(e.headers[header])
		return nil
	})
	if err != nil {
		return err
	}
	bw.writeRendering(hr)
	if form < formTextDeflate {
		for _, c := range e.chunks {
			cr, err := r.cached(&c.cache, form, func(buf *bytes.Buffer) error {
				return r.renderChunk(buf, name, e.typ, c, openMetrics)
			})
			if err != nil {
				return err
			}
			bw.writeRendering(cr)
		}
		return nil
	}
	if _, err := r.ahead.claims(name, e).build(r, name, e, form, byScrape); err != nil {
		return err
	}
	for i := 0; i < len(e.chunks); {
		cr := spanAt(e.chunks, i, form)
		if cr == nil {
			if cr, err = r.buildSpan(name, e, e.chunks[i:spanEnd(e.chunks, i, form)], form); err != nil {
				return err
			}
		}
		bw.writeRendering(cr)
		i += cr.chunks
	}
	return nil
}

// spanBytes is the plain size at which consecutive chunks of a name that
// miss their compressed rendering stop joining one deflate segment. A
// segment of one chunk (often under 16 KB) spends much of its time on its
// Huffman codes and finds fewer matches: on the benchmark's exposition at
// 1k groups, segments of one chunk take 1.4 times as long to compress as
// those of chunks up to 40 KB, and are 13% larger.
const spanBytes = 40 << 10

// spanAt returns the compressed rendering in form that starts at chunk i of
// chunks, or nil when there is none. A chunk's compressed rendering is the
// segment of a span of consecutive chunks, stored in each of them; it is
// current when as many consecutive chunks as it spans hold it, since a
// chunk that changed drops it and chunks that did not keep their order.
// Must be called holding s.mu for reading.
func spanAt(chunks []*chunk, i, form int) *rendering {
	cr := chunks[i].cache[form].Load()
	if cr == nil || cr.chunks < 1 || i+cr.chunks > len(chunks) {
		return nil
	}
	for _, c := range chunks[i+1 : i+cr.chunks] {
		if c.cache[form].Load() != cr {
			return nil
		}
	}
	return cr
}

// spanEnd returns the end of the span of chunks to compress together that
// starts at chunk i, which misses its rendering in form: it takes the
// following chunks that changed since they had one until the guessed
// plain size reaches spanBytes. A chunk that still holds the rendering of
// a span another chunk of which changed is not taken: where few chunks
// change between scrapes, spans fall apart into single chunks, so that a
// change soon costs the render of about one chunk, and where all change
// they form again.
// Must be called holding s.mu for reading.
func spanEnd(chunks []*chunk, i, form int) int {
	size := plainSizeGuess(chunks[i])
	j := i + 1
	for j < len(chunks) && size < spanBytes && chunks[j].cache[form].Load() == nil {
		size += plainSizeGuess(chunks[j])
		j++
	}
	return j
}

// plainSizeGuess is the size of c's text lines guessed from its first
// series, which the series of one name resemble.
func plainSizeGuess(c *chunk) int { return len(c.slots) * len(c.slots[0].se.text()) }

// buildSpan builds and stores in each chunk of span, consecutive chunks of
// name's entry e, their rendering in form, a deflate form: one segment of
// their lines, compressed from their cached plain renderings where there
// are some. Must be called holding s.mu for reading.
func (r *renderer) buildSpan(name string, e *nameEntry, span []*chunk, form int) (*rendering, error) {
	plainForm := form % formTextDeflate
	r.plain.Reset()
	for _, c := range span {
		if pr := c.cache[plainForm].Load(); pr != nil && pr != seenOnce {
			r.plain.Write(pr.b)
		} else if err := r.renderChunk(&r.plain, name, e.typ, c, plainForm == formOpenMetrics); err != nil {
			return nil, err
		}
	}
	cr := r.compress(r.plain.Bytes())
	cr.chunks = len(span)
	for _, c := range span {
		c.cache[form].Store(cr)
	}
	return cr, nil
}

// fillAhead is the helper goroutine of a scrape in a compressed form. The
// scrape starts it before gathering its own families, so that the stored
// ones are rendered meanwhile on another processor. It walks the names
// from the last back and builds the renderings their chunks miss, while
// the scrape's goroutine goes from the first name on; both take spans of
// chunks one at a time from each name's claims and stop where they meet,
// so they share the work in two halves without waiting for each other.
// What the helper builds is only cached: the scrape's goroutine writes
// each name from the caches as they are when it gets there, and builds
// whatever is still missing, such as a chunk a write changed in between or
// the span the helper is still compressing where they met.
type fillAhead struct {
	s     *Store
	form  int
	names []string
	// own holds the scrape's own families, sorted by name, once gathered:
	// a name among them is rendered afresh, so the helper leaves it alone.
	own atomic.Pointer[[]*dto.MetricFamily]
	// scrapeAt is the index in names of the name the scrape's goroutine
	// got to, -1 before the first; the helper stops before it.
	scrapeAt atomic.Int64
	// byName holds the claims of every name with missing renderings that
	// either goroutine got to.
	byName sync.Map
	stop   atomic.Bool
	done   sync.WaitGroup
}

// startFillAhead starts the helper of a scrape in form over names, or
// returns nil when form is not compressed or the process runs on one
// processor.
func (s *Store) startFillAhead(form int, names []string) *fillAhead {
	if form < formTextDeflate || runtime.GOMAXPROCS(0) < 2 {
		return nil
	}
	a := newFillAhead(s, form, names)
	a.done.Go(a.run)
	return a
}

// newFillAhead returns the helper of a scrape in form over names, not yet
// started.
func newFillAhead(s *Store, form int, names []string) *fillAhead {
	a := &fillAhead{s: s, form: form, names: names}
	a.scrapeAt.Store(-1)
	return a
}

// reached tells the helper, when there is one, that the scrape's goroutine
// got to names[i].
func (a *fillAhead) reached(i int) {
	if a != nil {
		a.scrapeAt.Store(int64(i))
	}
}

// ownKnown tells the helper, when there is one, the scrape's own families.
func (a *fillAhead) ownKnown(own []*dto.MetricFamily) {
	if a != nil {
		a.own.Store(&own)
	}
}

func (a *fillAhead) run() {
	r := getRenderer()
	defer putRenderer(r)
	for i, name := range slices.Backward(a.names) {
		if a.stop.Load() || int64(i) < a.scrapeAt.Load() {
			return
		}
		if own := a.own.Load(); own != nil {
			if _, isOwn := slices.BinarySearchFunc(*own, name, func(mf *dto.MetricFamily, name string) int {
				return strings.Compare(mf.GetName(), name)
			}); isOwn {
				continue
			}
		}
		a.s.mu.RLock()
		met, err := false, error(nil)
		if e := a.s.names[name]; e != nil {
			met, err = a.claims(name, e).build(r, name, e, a.form, byHelper)
		}
		a.s.mu.RUnlock()
		if met || err != nil {
			// Before the spans the scrape took, everything is the
			// scrape's; it meets an error itself.
			return
		}
	}
}

// finish stops the helper, when there is one, and waits for it.
func (a *fillAhead) finish() {
	if a == nil {
		return
	}
	a.stop.Store(true)
	a.done.Wait()
}

// claims returns the claims of name's chunks, listing the spans of e's
// chunks missing a rendering when it is the first to ask, or nil when a is
// nil or no chunk misses one. Must be called holding s.mu for reading.
func (a *fillAhead) claims(name string, e *nameEntry) *spanClaims {
	if a == nil {
		return nil
	}
	if c, ok := a.byName.Load(name); ok {
		return c.(*spanClaims)
	}
	var missing []*chunk
	var ends []int
	for i := 0; i < len(e.chunks); {
		if cr := spanAt(e.chunks, i, a.form); cr != nil {
			i += cr.chunks
			continue
		}
		j := spanEnd(e.chunks, i, a.form)
		missing = append(missing, e.chunks[i:j]...)
		ends = append(ends, len(missing))
		i = j
	}
	if missing == nil {
		return nil
	}
	c := &spanClaims{e: e, reshapes: e.reshapes, spans: make([][]*chunk, len(ends)), takenBy: make([]atomic.Uint32, len(ends)), stop: &a.stop}
	start := 0
	for k, end := range ends {
		c.spans[k] = missing[start:end:end]
		start = end
	}
	actual, _ := a.byName.LoadOrStore(name, c)
	return actual.(*spanClaims)
}

// spanClaims hands out the spans of one name's chunks that missed a
// rendering, each to one goroutine: the scrape's takes them from the first
// on, the helper's from the last back, and each stops where it meets a
// span the other took.
type spanClaims struct {
	// e is the name's entry and reshapes its count of reshapes when the
	// spans were listed: after a write that moved series between chunks,
	// a listed chunk may be gone, and the scrape's goroutine builds what
	// is missing instead.
	e        *nameEntry
	reshapes uint64
	spans    [][]*chunk
	// takenBy holds, for each span, who took it (0 while nobody did).
	takenBy []atomic.Uint32
	stop    *atomic.Bool
}

// Claimants of spans: the scrape's goroutine and its helper.
const (
	byScrape = 1 + iota
	byHelper
)

// build builds the renderings in form of the spans of name's entry e that
// by takes, until it meets a span the other claimant took, which it
// reports, or none is left, the scrape is done or the spans are out of
// date; nothing for nil claims. Must be called holding s.mu for reading.
func (c *spanClaims) build(r *renderer, name string, e *nameEntry, form int, by uint32) (met bool, err error) {
	if c == nil || e != c.e || e.reshapes != c.reshapes {
		return false, nil
	}
	for k := range c.spans {
		i := k
		if by == byHelper {
			i = len(c.spans) - 1 - k
		}
		if c.stop.Load() {
			return false, nil
		}
		if !c.takenBy[i].CompareAndSwap(0, by) {
			return true, nil
		}
		if _, err := r.buildSpan(name, e, c.spans[i], form); err != nil {
			return false, err
		}
	}
	return false, nil
}

// cached returns the rendering of rc in form, building and storing it when
// missing; write renders the plain bytes. A deflate form is compressed
// from the cached plain form when there is one. A plain form is stored
// when it is rendered a second time since rc was last reset (by the same
// or another uncompressed scrape of that format): the first time, rc is
// only marked seenOnce and the rendering returned lives in r until the
// next call on r or putRenderer. Must be called holding s.mu for reading.
func (r *renderer) cached(rc *renderCache, form int, write func(*bytes.Buffer) error) (*rendering, error) {
	if cr := rc[form].Load(); cr != nil && cr != seenOnce {
		return cr, nil
	}
	plainForm := form % formTextDeflate
	var plain []byte
	if pr := rc[plainForm].Load(); pr != nil && pr != seenOnce {
		if form == plainForm {
			return pr, nil // stored by a concurrent scrape meanwhile
		}
		plain = pr.b
	} else {
		r.plain.Reset()
		if err := write(&r.plain); err != nil {
			return nil, err
		}
		plain = r.plain.Bytes()
	}
	if form == plainForm && rc[form].CompareAndSwap(nil, seenOnce) {
		r.unstored = rendering{b: plain, size: len(plain)}
		return &r.unstored, nil
	}
	var cr *rendering
	if form == plainForm {
		cr = &rendering{b: bytes.Clone(plain), size: len(plain)}
	} else {
		cr = r.compress(plain)
	}
	rc[form].Store(cr)
	return cr, nil
}

// compress returns the deflate rendering of plain.
func (r *renderer) compress(plain []byte) *rendering {
	r.seg.Reset()
	appendSegment(&r.seg, r.fw, plain)
	return &rendering{
		b:     bytes.Clone(r.seg.Bytes()),
		crc:   crc32.ChecksumIEEE(plain),
		shift: crc32Shift(len(plain)),
		size:  len(plain),
	}
}

// renderChunk writes the lines of every series of c in the text format or
// OpenMetrics. Must be called holding s.mu for reading.
func (r *renderer) renderChunk(buf *bytes.Buffer, name string, typ dto.MetricType, c *chunk, openMetrics bool) error {
	// The slots, series and lines of a chunk are scattered in memory and
	// rarely cached when the chunk changed. Loading them in passes
	// without dependencies between iterations lets the processor wait for
	// many cache misses at once, where a single pass waits for each in
	// turn.
	ses := r.series[:len(c.slots)]
	for i, sl := range c.slots {
		ses[i] = sl.se
	}
	var touched byte
	for _, se := range ses {
		// A series spans two cache lines, its line often two more.
		text := se.text()
		touched ^= text[0] ^ text[len(text)-1]
		if se.simple {
			touched++
		}
	}
	r.touched = touched
	for _, se := range ses {
		switch {
		case !openMetrics:
			buf.Write(se.text())
		case se.simple:
			appendOpenMetricsLine(buf, se.text(), se.integral)
		case se.classic:
			appendOpenMetricsClassic(buf, name, se.text())
		default:
			b, err := se.lines(name, typ, true)
			if err != nil {
				return err
			}
			buf.Write(b)
		}
	}
	clear(ses)
	return nil
}

// appendOpenMetricsLine writes the OpenMetrics form of a simple series'
// text line: the same line, with ".0" after the value when integral, as
// OpenMetrics writes floats.
func appendOpenMetricsLine(buf *bytes.Buffer, text []byte, integral bool) {
	if !integral {
		buf.Write(text)
		return
	}
	buf.Write(text[:len(text)-1])
	buf.WriteString(".0\n")
}

// isIntegralText reports whether value, a sample value in the text
// format, is an integer without exponent, to which OpenMetrics adds ".0".
func isIntegralText(value []byte) bool {
	return !containsByte(value, '.', 'e', 'N') && !bytes.HasSuffix(value, []byte("Inf"))
}

// openMetricsEncoder writes families in OpenMetrics with the le and
// quantile values of the text format (see textBounds).
type openMetricsEncoder struct {
	w   io.Writer
	tmp bytes.Buffer
}

func (e *openMetricsEncoder) Encode(mf *dto.MetricFamily) error {
	e.tmp.Reset()
	if _, err := expfmt.MetricFamilyToOpenMetrics(&e.tmp, mf); err != nil {
		return err
	}
	_, err := e.w.Write(textBounds(e.tmp.Bytes(), mf.GetType()))
	return err
}

func (e *openMetricsEncoder) Close() error {
	_, err := expfmt.FinalizeOpenMetrics(e.w)
	return err
}

var (
	leLabel       = []byte(`le="`)
	quantileLabel = []byte(`quantile="`)
)

// textBounds rewrites the bucket bounds (le) of a histogram's or the
// quantiles of a summary's OpenMetrics lines, the labels expfmt writes from
// numbers, in the text format's float form ("1", not "1.0"). Prometheus 2
// stores these values as they are sent, so this keeps the series a
// Prometheus scraping with OpenMetrics stores identical to those it stores
// from the text format, as from the Pushgateway. Only a sample's own label
// set is read: labels of other types and of exemplars are pushed strings
// and stay as they are.
func textBounds(b []byte, typ dto.MetricType) []byte {
	var name []byte
	switch typ {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		name = leLabel
	case dto.MetricType_SUMMARY:
		name = quantileLabel
	default:
		return b
	}
	var out []byte
	last := 0
	for line := 0; line < len(b); {
		end := bytes.IndexByte(b[line:], '\n')
		if end < 0 {
			end = len(b)
		} else {
			end += line
		}
		if start, stop, ok := boundValue(b[line:end], name); ok {
			start, stop = line+start, line+stop
			if v, err := strconv.ParseFloat(string(b[start:stop]), 64); err == nil {
				if text := appendFloat(nil, v); !bytes.Equal(text, b[start:stop]) {
					out = append(out, b[last:start]...)
					out = append(out, text...)
					last = stop
				}
			}
		}
		line = end + 1
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// boundValue returns where the value of the label name (`le="` or
// `quantile="`) starts and ends in the label set of a sample line, the
// first brace group, read with its quoted values, or false when the line is
// a comment or has no such label.
func boundValue(line, name []byte) (start, end int, ok bool) {
	if len(line) == 0 || line[0] == '#' {
		return 0, 0, false
	}
	i := bytes.IndexAny(line, "{ ")
	if i < 0 || line[i] != '{' {
		return 0, 0, false // no label set; a brace after a space is an exemplar's
	}
	for i < len(line) && line[i] != '}' {
		// i is at the brace or comma before a label name.
		if bytes.HasPrefix(line[i+1:], name) {
			start = i + 1 + len(name)
			if end = bytes.IndexByte(line[start:], '"'); end < 0 {
				return 0, 0, false
			}
			return start, start + end, true
		}
		// Skip the label's name and quoted value.
		q := bytes.IndexByte(line[i+1:], '"')
		if q < 0 {
			return 0, 0, false
		}
		i += 1 + q + 1
		for i < len(line) && line[i] != '"' {
			if line[i] == '\\' {
				i++
			}
			i++
		}
		i++ // past the closing quote, at the comma or brace
	}
	return 0, 0, false
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
			if isDigits(value) {
				// A whole number below 2^53 in the text format's form
				// is already the integer.
				buf.Write(value)
				buf.WriteByte('\n')
				continue
			}
			if v, err := strconv.ParseFloat(string(value), 64); err == nil {
				var num [20]byte
				buf.Write(strconv.AppendUint(num[:0], uint64(v), 10))
				buf.WriteByte('\n')
				continue
			}
		}
		buf.Write(value)
		if isIntegralText(value) {
			buf.WriteString(".0")
		}
		buf.WriteByte('\n')
	}
}

// isDigits reports whether b is a non-empty run of decimal digits.
func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// lines returns the series in the text format or, building and caching it on
// first use, in OpenMetrics.
func (se *series) lines(name string, typ dto.MetricType, openMetrics bool) ([]byte, error) {
	if !openMetrics {
		return se.text(), nil
	}
	if p := se.openMetrics.Load(); p != nil {
		return *p, nil
	}
	m := &dto.Metric{}
	if err := unmarshalMetric(se.metric(), m); err != nil {
		return nil, err
	}
	b, err := encodeSeries(name, typ, m, true)
	if err != nil {
		return nil, err
	}
	b = textBounds(b, typ)
	se.openMetrics.Store(&b)
	return b, nil
}

// ExpositionHandler serves the own metrics of gatherer and every stored group
// in the format the scraper asks for, gzip-compressed when it accepts gzip.
func (s *Store) ExpositionHandler(gatherer prometheus.Gatherer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		format := expfmt.NegotiateAccept(r.Header, scrapeFormats...)
		s.mu.RLock()
		floats := s.floatSeries
		s.mu.RUnlock()
		// OpenMetrics 1.0 has no fractional histogram counts: with any,
		// stored or own, the text format is served, which every scraper
		// accepts.
		if format.FormatType() == expfmt.TypeOpenMetrics && floats > 0 {
			format = textFormat()
		}
		gz := acceptsGzip(r)
		only := nameFilter(r)
		names := s.scrapeNames(only)
		// The stored families are rendered while the own ones are
		// gathered.
		ahead := s.startFillAhead(cachedForm(format, gz), names)
		own, err := gatherer.Gather()
		if err != nil {
			ahead.finish()
			http.Error(w, fmt.Sprintf("An error has occurred while serving metrics:\n\n%s", err), http.StatusInternalServerError)
			return
		}
		if only != nil {
			own = slices.DeleteFunc(slices.Clone(own), func(mf *dto.MetricFamily) bool { return !only[mf.GetName()] })
		}
		if format.FormatType() == expfmt.TypeOpenMetrics && anyFloatCounts(own) {
			format = textFormat()
			ahead.finish()
			ahead = s.startFillAhead(cachedForm(format, gz), names)
		}
		h := w.Header()
		h.Set("Content-Type", string(format))
		if gz {
			h.Set("Content-Encoding", "gzip")
			h.Add("Vary", "Accept-Encoding")
		}
		bw := getBodyWriter(w, gz)
		defer putBodyWriter(bw)
		if err := s.render(bw, own, format, names, ahead); err != nil {
			// The status is sent already: the scraper sees a cut-off body.
			s.logger.Error("cannot serve metrics", "err", err)
		}
	})
}

// textFormat is the text format, which every scraper accepts.
func textFormat() expfmt.Format {
	return expfmt.NegotiateAccept(http.Header{}, scrapeFormats...)
}

// nameFilter returns the metric names asked for with name[] query
// parameters, as client_golang's promhttp handler takes them, or nil when
// the request names none and every family is exposed.
func nameFilter(r *http.Request) map[string]bool {
	names := r.URL.Query()["name[]"]
	if len(names) == 0 {
		return nil
	}
	only := make(map[string]bool, len(names))
	for _, name := range names {
		only[name] = true
	}
	return only
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
