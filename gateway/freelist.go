package gateway

// freeList keeps up to its capacity of values between uses. Unlike a
// sync.Pool it keeps them across garbage collections: under a steady push
// load several collections run between two scrapes, so a sync.Pool hands
// almost every scrape new deflate writers (about 0.5 MB each, zeroed) and
// buffers that grow again, a quarter of the time of a scrape that renders
// every chunk.
type freeList[T any] struct {
	free  chan T
	fresh func() T
}

// newFreeList returns a free list keeping up to n values, which builds a
// value with fresh when it holds none.
func newFreeList[T any](n int, fresh func() T) *freeList[T] {
	return &freeList[T]{free: make(chan T, n), fresh: fresh}
}

// get returns a kept value, or a fresh one when none is kept.
func (l *freeList[T]) get() T {
	select {
	case v := <-l.free:
		return v
	default:
		return l.fresh()
	}
}

// put keeps v for a later get, or drops it when the list is full.
func (l *freeList[T]) put(v T) {
	select {
	case l.free <- v:
	default:
	}
}
