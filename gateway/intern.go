package gateway

import (
	"strings"
	"sync"
)

// maxInterned bounds the strings intern keeps; past it, strings are copied
// instead, so that pushes of ever new names cannot grow the table forever.
const maxInterned = 1 << 16

// interned holds one copy of the metric names and help texts of pushed
// families: every push of a group carries the same ones, and the copies of
// many groups then share one string instead of keeping a parsed body alive.
var interned = struct {
	sync.RWMutex
	m map[string]string
}{m: map[string]string{}}

// intern returns a string equal to s that does not share memory with s.
func intern(s string) string {
	interned.RLock()
	v, ok := interned.m[s]
	interned.RUnlock()
	if ok {
		return v
	}
	v = strings.Clone(s)
	interned.Lock()
	defer interned.Unlock()
	if old, ok := interned.m[v]; ok {
		return old
	}
	if len(interned.m) < maxInterned {
		interned.m[v] = v
	}
	return v
}
