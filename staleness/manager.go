package staleness

import (
	"container/heap"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/promslog"
)

// retryDelay is how long a failed expiry waits before it is tried again.
const retryDelay = time.Second

// Expirer applies expiries through the durable write path.
type Expirer interface {
	// Expire expires each listed group whose deadline has passed and
	// returns once the change is committed. Groups pushed since their
	// deadline was scheduled, or already gone, are left alone.
	Expire(keys []string) error
}

// Manager resolves group TTLs with a reloadable Policy and expires groups
// when their deadlines pass. It is safe for concurrent use.
type Manager struct {
	policy atomic.Pointer[Policy]
	logger *slog.Logger

	mu      sync.Mutex
	pending deadlineHeap
	byKey   map[string]*deadline
	wake    chan struct{}
}

// NewManager returns a Manager that resolves TTLs with p.
func NewManager(p *Policy, logger *slog.Logger) *Manager {
	if logger == nil {
		logger = promslog.NewNopLogger()
	}
	m := &Manager{logger: logger, byKey: map[string]*deadline{}, wake: make(chan struct{}, 1)}
	m.policy.Store(p)
	return m
}

// SetPolicy replaces the policy; it applies from each group's next push.
func (m *Manager) SetPolicy(p *Policy) { m.policy.Store(p) }

// ResolveTTL returns the TTL (0 = never), action and source for a group with
// these grouping labels.
func (m *Manager) ResolveTTL(labels map[string]string) (time.Duration, string, string) {
	ttl, action, source := m.policy.Load().Resolve(labels)
	return ttl, string(action), source
}

// DefaultAction returns the action for a TTL given by a push header.
func (m *Manager) DefaultAction() string { return string(m.policy.Load().DefaultAction()) }

// Schedule sets the deadline of the group with this key, replacing any
// earlier one.
func (m *Manager) Schedule(key string, at time.Time) {
	m.mu.Lock()
	if d := m.byKey[key]; d != nil {
		d.at = at
		heap.Fix(&m.pending, d.index)
	} else {
		d := &deadline{key: key, at: at}
		heap.Push(&m.pending, d)
		m.byKey[key] = d
	}
	first := m.pending[0].key == key
	m.mu.Unlock()
	if first {
		m.poke()
	}
}

// Cancel forgets the deadline of the group with this key.
func (m *Manager) Cancel(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d := m.byKey[key]; d != nil {
		heap.Remove(&m.pending, d.index)
		delete(m.byKey, key)
	}
}

// Pending returns how many groups have a deadline.
func (m *Manager) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run expires due groups through e until ctx is done.
func (m *Manager) Run(ctx context.Context, e Expirer) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := m.due(time.Now())
		if len(due) > 0 {
			if err := e.Expire(due); err != nil {
				m.logger.Error("cannot expire groups; retrying", "groups", len(due), "err", err)
				retry := time.Now().Add(retryDelay)
				for _, key := range due {
					m.Schedule(key, retry)
				}
			}
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// due removes and returns the keys whose deadline is not after now, and
// returns the next deadline after them.
func (m *Manager) due(now time.Time) ([]string, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for len(m.pending) > 0 && !m.pending[0].at.After(now) {
		d := heap.Pop(&m.pending).(*deadline)
		delete(m.byKey, d.key)
		keys = append(keys, d.key)
	}
	if len(m.pending) == 0 {
		return keys, time.Time{}
	}
	return keys, m.pending[0].at
}

// deadline is one group's expiry time in the heap.
type deadline struct {
	key   string
	at    time.Time
	index int
}

// deadlineHeap orders deadlines, earliest first.
type deadlineHeap []*deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlineHeap) Push(x any) {
	d := x.(*deadline)
	d.index = len(*h)
	*h = append(*h, d)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return d
}
