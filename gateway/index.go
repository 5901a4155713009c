package gateway

import (
	"slices"
	"sort"
	"sync/atomic"

	dto "github.com/prometheus/client_model/go"
)

// maxChunk is the number of series at which a chunk is split in two; a
// chunk is the unit of cached exposition bytes.
const maxChunk = 256

// nameEntry indexes every stored series of one metric name.
type nameEntry struct {
	typ     dto.MetricType
	help    string
	hasHelp bool
	// holders counts the groups holding a family of this name.
	holders int
	// slots holds the slot of every series identity by id.
	slots map[uint64]*slot
	// chunks hold the slots in exposition order, each at most maxChunk
	// long and none empty. A push that only replaces series of the same
	// identities swaps their slots' series and leaves the order alone.
	chunks []*chunk
	// headers cache the HELP and TYPE lines: text format, OpenMetrics.
	headers [2][]byte
	// headerCache caches the renderings of headers.
	headerCache renderCache
	// reshapes counts the changes of which slots the chunks hold, by
	// insert and remove (see spanClaims).
	reshapes uint64
}

// slot is the place of one series identity in the exposition order. It
// holds the current version of the series, whose key gives the order.
type slot struct {
	se *series
	c  *chunk
}

// chunk is a run of consecutive slots of one name whose renderings are
// cached until one of its series is added, replaced or removed; its
// compressed renderings may span the chunks after it (see spanAt).
type chunk struct {
	slots []*slot
	cache renderCache
}

// newNameEntry returns an empty index entry for series of type typ.
func newNameEntry(typ dto.MetricType) *nameEntry {
	return &nameEntry{typ: typ, slots: map[uint64]*slot{}}
}

// lookup returns the current series of the identity id.
func (e *nameEntry) lookup(id uint64) (*series, bool) {
	sl, ok := e.slots[id]
	if !ok {
		return nil, false
	}
	return sl.se, true
}

// len returns the number of indexed series.
func (e *nameEntry) len() int { return len(e.slots) }

// put indexes se, replacing the series of the same identity, and returns
// the change of the number of float-count series. Must be called holding
// s.mu for writing.
func (e *nameEntry) put(se *series) int {
	if sl, ok := e.slots[se.id]; ok {
		return e.replace(sl.se, se)
	}
	sl := &slot{se: se}
	se.slot = sl
	e.slots[se.id] = sl
	e.insert(sl)
	return floatDelta(nil, se)
}

// replace puts se in the slot of prev, the current version of the same
// identity, without looking it up, and returns the change of the number of
// float-count series. Must be called holding s.mu for writing.
func (e *nameEntry) replace(prev, se *series) int {
	sl := prev.slot
	if se.key != prev.key {
		// The same identity in another group: the slot moves to the
		// place of the new key.
		e.remove(sl)
		sl.se, se.slot = se, sl
		e.insert(sl)
		return floatDelta(prev, se)
	}
	sl.se, se.slot = se, sl
	sl.c.cache.reset()
	return floatDelta(prev, se)
}

// drop removes se from the index unless its identity now belongs to
// another group, and returns the change of the number of float-count
// series. Must be called holding s.mu for writing.
func (e *nameEntry) drop(se *series) int {
	sl, ok := e.slots[se.id]
	if !ok || sl.se.groupKey != se.groupKey {
		return 0
	}
	delete(e.slots, se.id)
	e.remove(sl)
	delta := floatDelta(sl.se, nil)
	// Replaced series may still point to the slot: those of a templated
	// push share their structs with its other families (familyAlloc) and
	// stay while one of them is stored. The dropped slot keeps no series,
	// so that it does not keep another push's structs too.
	sl.se, sl.c = nil, nil
	return delta
}

// insert places sl in exposition order, splitting a chunk that grows
// beyond maxChunk.
func (e *nameEntry) insert(sl *slot) {
	if len(e.chunks) == 0 {
		e.chunks = append(e.chunks, &chunk{})
	}
	ci := min(e.chunkIndex(sl.se.key), len(e.chunks)-1)
	c := e.chunks[ci]
	c.slots = slices.Insert(c.slots, c.position(sl.se.key), sl)
	sl.c = c
	c.cache.reset()
	e.reshapes++
	if len(c.slots) <= maxChunk {
		return
	}
	half := len(c.slots) / 2
	next := &chunk{slots: make([]*slot, len(c.slots)-half, maxChunk)}
	copy(next.slots, c.slots[half:])
	c.slots = slices.Delete(c.slots, half, len(c.slots))
	for _, moved := range next.slots {
		moved.c = next
	}
	e.chunks = slices.Insert(e.chunks, ci+1, next)
}

// remove takes sl out of the exposition order. An emptied chunk goes
// away; a chunk that shrank to an eighth of maxChunk joins its successor
// when both fit in one.
func (e *nameEntry) remove(sl *slot) {
	c := sl.c
	i := c.position(sl.se.key)
	e.reshapes++
	if len(c.slots) > maxChunk/8+1 {
		c.slots = slices.Delete(c.slots, i, i+1)
		c.cache.reset()
		return
	}
	ci := e.chunkIndex(sl.se.key)
	c.slots = slices.Delete(c.slots, i, i+1)
	c.cache.reset()
	if len(c.slots) == 0 {
		e.chunks = slices.Delete(e.chunks, ci, ci+1)
		return
	}
	if ci+1 == len(e.chunks) || len(c.slots)+len(e.chunks[ci+1].slots) > maxChunk {
		return
	}
	next := e.chunks[ci+1]
	for _, moved := range next.slots {
		moved.c = c
	}
	c.slots = append(c.slots, next.slots...)
	// The merged chunk is gone; scrapes that listed it before see it
	// empty.
	next.slots = nil
	e.chunks = slices.Delete(e.chunks, ci+1, ci+2)
}

// chunkIndex returns the position of the first chunk whose last key is not
// below key: the chunk that holds key or would take it, or len(e.chunks)
// when key is beyond every chunk. An empty chunk must be the only one.
func (e *nameEntry) chunkIndex(key string) int {
	return sort.Search(len(e.chunks), func(i int) bool {
		s := e.chunks[i].slots
		return len(s) == 0 || s[len(s)-1].se.key >= key
	})
}

// position returns the index of the first slot of c whose key is not below
// key.
func (c *chunk) position(key string) int {
	return sort.Search(len(c.slots), func(i int) bool { return c.slots[i].se.key >= key })
}

// floatDelta is the change of the float-count series when old becomes new
// (either may be nil).
func floatDelta(old, new *series) int {
	d := 0
	if old != nil && old.floatCounts {
		d--
	}
	if new != nil && new.floatCounts {
		d++
	}
	return d
}

// ascend calls fn for every series in exposition order. Must be called
// holding s.mu.
func (e *nameEntry) ascend(fn func(*series) bool) {
	for _, c := range e.chunks {
		for _, sl := range c.slots {
			if !fn(sl.se) {
				return
			}
		}
	}
}

// Forms of cached renderings: the text format or OpenMetrics, each plain
// or as a raw deflate segment.
const (
	formText = iota
	formOpenMetrics
	formTextDeflate
	formOpenMetricsDeflate
	numForms
)

// rendering is the exposition of a chunk or header in one form. It is
// immutable once built.
type rendering struct {
	// b holds the plain bytes or their raw deflate segment.
	b []byte
	// crc is the CRC-32 (IEEE) of the plain bytes of a deflate form and
	// shift the operator that appends it to another CRC (see
	// crc32Shift); size is the length of the plain bytes.
	crc, shift uint32
	size       int
	// chunks is the number of consecutive chunks whose lines a deflate
	// form of chunks holds, at least 1 (see spanAt); 0 for other
	// renderings.
	chunks int
}

// renderCache holds the renderings of one chunk or header, a compressed
// form built on first use, a plain one on the second (see seenOnce).
// Writers reset it holding s.mu for writing; readers build and store
// renderings holding s.mu for reading, so a plain rendering stored is
// never stale, and a compressed one of a chunk is current where spanAt
// finds it.
type renderCache [numForms]atomic.Pointer[rendering]

// seenOnce stands in a renderCache for a plain form rendered once since
// the last reset but not stored. A plain rendering costs little more than
// a copy of the lines yet would be kept at the size of the lines (35 MB at
// 10k groups of the benchmark body), so it is only stored when a second
// uncompressed scrape of the same format renders the unchanged chunk; the
// garbage collector has less to do, and a scrape after every chunk changed
// allocates nothing for them.
var seenOnce = &rendering{}

// reset drops every rendering. Must be called holding s.mu for writing.
func (rc *renderCache) reset() {
	for i := range rc {
		rc[i].Store(nil)
	}
}
