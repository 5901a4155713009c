// Package gctune keeps a minimum of headroom between the live heap and the
// heap size at which the Go garbage collector starts its next cycle.
//
// With GOGC=100 the collector runs whenever the heap has doubled. A push
// gateway holding a few thousand groups has a live heap of some tens of
// megabytes, so its collector would run several times per second under
// push load and take a large share of the CPU. Tune raises the GC
// percentage while the live heap is small, so that at least the given
// headroom is allowed, and returns to GOGC's value once the live heap is
// large enough for that value to give the headroom by itself: memory grows
// by at most the headroom, never by a factor.
//
// # Caveats
//
// A GOGC or GOMEMLIMIT set in the environment wins: Tune then does nothing.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

const liveHeapMetric = "/gc/heap/live:bytes"

// basePercent is the GC percentage below which Tune never goes.
const basePercent = 100

// Tuner adjusts the GC percentage after every collection.
type Tuner struct {
	headroom uint64
	percent  atomic.Int64
	// mu orders retuning after a collection with Stop.
	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
}

// sentinel is collected at every cycle; its cleanup retunes and makes the
// next one.
type sentinel struct{ _ *int }

// Tune starts tuning for headroom bytes and returns the tuner, or nil when
// headroom is 0 or the environment sets GOGC or GOMEMLIMIT.
func Tune(headroom uint64) *Tuner {
	if headroom == 0 || os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	t := &Tuner{headroom: headroom, sample: []metrics.Sample{{Name: liveHeapMetric}}}
	t.mu.Lock()
	t.retune()
	t.mu.Unlock()
	t.arm()
	return t
}

func (t *Tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *Tuner) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.stopped {
			return
		}
		t.retune()
		t.arm()
	}, t)
}

// retune sets the percentage that gives the live heap at least the
// headroom. Must be called holding t.mu.
func (t *Tuner) retune() {
	metrics.Read(t.sample)
	live := uint64(0)
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	p := Percent(live, t.headroom)
	if int64(p) != t.percent.Load() {
		t.percent.Store(int64(p))
		debug.SetGCPercent(p)
	}
}

// Percent returns the GC percentage that allows a live heap of live bytes
// to grow by at least headroom bytes, and never less than 100.
func Percent(live, headroom uint64) int {
	if live == 0 {
		live = 1 << 20
	}
	p := headroom * 100 / live
	return int(max(p, basePercent))
}

// GCPercent returns the percentage last set.
func (t *Tuner) GCPercent() int { return int(t.percent.Load()) }

// Stop stops tuning and restores the default percentage.
func (t *Tuner) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(basePercent)
	}
}
