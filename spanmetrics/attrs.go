package spanmetrics

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// keyIndex numbers the span attribute keys the processor looks up, so that
// one pass over a span's attributes finds all of them.
type keyIndex struct {
	keys []string
	// byLength lists the numbers of the keys of each length; keys of 63
	// bytes or more share the last list. Most attributes are ruled out by
	// their length alone.
	byLength [64][]int
}

// add returns the number of key, adding it if it is new.
func (x *keyIndex) add(key string) int {
	if i := x.find(key); i >= 0 {
		return i
	}
	x.keys = append(x.keys, key)
	l := min(len(key), 63)
	x.byLength[l] = append(x.byLength[l], len(x.keys)-1)
	return len(x.keys) - 1
}

// addAll adds keys and returns their numbers, in order.
func (x *keyIndex) addAll(keys []string) []int {
	out := make([]int, len(keys))
	for i, k := range keys {
		out[i] = x.add(k)
	}
	return out
}

// find returns the number of key, or -1.
func (x *keyIndex) find(key string) int {
	if key == "" {
		if empty := x.byLength[0]; len(empty) > 0 {
			return empty[0]
		}
		return -1
	}
	for _, i := range x.byLength[min(len(key), 63)] {
		// The first byte rules out most keys of the same length before
		// a full comparison.
		if k := x.keys[i]; k[0] == key[0] && k == key {
			return i
		}
	}
	return -1
}

// spanAttrs holds what one pass over a span's attributes found: the first
// value of every indexed key and, when asked for, the protobuf size of the
// attributes. It is reused from span to span.
type spanAttrs struct {
	index  *keyIndex
	values []pcommon.Value
	found  []bool
	// size is the encoded size of the attributes as repeated KeyValue
	// fields of a Span, when scan was asked to compute it.
	size int
}

func newSpanAttrs(index *keyIndex) *spanAttrs {
	return &spanAttrs{index: index, values: make([]pcommon.Value, len(index.keys)), found: make([]bool, len(index.keys))}
}

// scan reads attrs in one pass. A key present more than once yields its
// first value, as pcommon.Map.Get does.
func (a *spanAttrs) scan(attrs pcommon.Map, withSize bool) {
	clear(a.found)
	a.size = 0
	if len(a.index.keys) == 0 && !withSize {
		return
	}
	for k, v := range attrs.All() {
		if withSize {
			a.size += keyValueSize(k, v)
		}
		if i := a.index.find(k); i >= 0 && !a.found[i] {
			a.values[i], a.found[i] = v, true
		}
	}
}

// get returns the value of key number i as a label value, and whether the
// span has it.
func (a *spanAttrs) get(i int) (string, bool) {
	if !a.found[i] {
		return "", false
	}
	return stringify(a.values[i]), true
}

// first returns the value of the first of the keys numbered keys that the
// span has.
func (a *spanAttrs) first(keys []int) (string, bool) {
	for _, i := range keys {
		if a.found[i] {
			return stringify(a.values[i]), true
		}
	}
	return "", false
}
