package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/promslog"

	"github.com/pushrelay/pushrelay/persistence"
)

const (
	// queueCapacity bounds the applied writes waiting for their commit, as
	// the Pushgateway bounds its write queue.
	queueCapacity = 1000
	// maxBatch bounds how many writes share one commit.
	maxBatch = 256
	// ownRefresh is how long the names and types of the own metrics are
	// cached for the consistency check.
	ownRefresh = time.Second
)

var (
	// errTimestamp rejects pushed samples that carry a timestamp.
	errTimestamp = errors.New("pushed metrics must not have timestamps")
	// ErrStoreClosed is returned for writes submitted after Close.
	ErrStoreClosed = errors.New("store is shut down")
)

// RejectedError is the reason the store rejected a push as invalid or
// inconsistent; the push changed nothing but the failure time of its group.
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string { return e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

// LimitError is returned for a write that would exceed a configured limit;
// it changed nothing. Status is the HTTP status to answer with.
type LimitError struct {
	Status int
	Msg    string
}

func (e *LimitError) Error() string { return e.Msg }

// Limits bound what pushes may store; zero values mean no limit.
type Limits struct {
	// MaxGroups bounds the number of groups.
	MaxGroups int
	// MaxSeriesPerGroup bounds the series of one group, its timestamp
	// gauges not counted.
	MaxSeriesPerGroup int
	// MaxLabelNameLength and MaxLabelValueLength bound the bytes of one
	// label name or value.
	MaxLabelNameLength, MaxLabelValueLength int
}

// PersistError is returned when a write could not be committed to disk.
// The write was undone in memory, unless Err wraps
// persistence.ErrUnsynced: then the file holds the write, and so does the
// store, though a crash before the next successful sync may lose it.
type PersistError struct{ Err error }

func (e *PersistError) Error() string { return e.Err.Error() }
func (e *PersistError) Unwrap() error { return e.Err }

// Persister stores committed group changes durably.
type Persister interface {
	// Commit writes ops atomically and returns once they are durable. It
	// must not keep ops or their groups: the store reuses them.
	Commit(ops []persistence.Op) error
	// Load calls fn for every stored group.
	Load(fn func(*persistence.Group) error) error
	// Probe checks that the storage can be written again after a failed
	// commit.
	Probe() error
}

var _ Persister = (*persistence.DB)(nil)

// Expiry decides the TTL of groups and is told every group's expiry
// deadline; see package staleness. Its methods are called from writing
// goroutines and the store's committer at the same time.
type Expiry interface {
	// ResolveTTL returns the TTL of a group with these grouping labels
	// (0 = never), its action ("zero" or "delete") and its source.
	ResolveTTL(labels map[string]string) (ttl time.Duration, action, source string)
	// DefaultAction is the action for a TTL given by a push header.
	DefaultAction() string
	// Schedule sets the deadline of the group with this key.
	Schedule(key string, deadline time.Time)
	// Cancel forgets the deadline of the group with this key.
	Cancel(key string)
}

// Expiry actions and the TTL source of a push header.
const (
	actionZero   = "zero"
	actionDelete = "delete"
	sourceHeader = "header"
	sourceFlag   = "flag"
)

// groupTTL is the expiry setting of a group.
type groupTTL struct {
	d      time.Duration
	action string
	source string
}

type writeKind int

const (
	writePut writeKind = iota
	writePost
	writeDelete
	writeWipe
	writeExpire
)

// writeRequest is one change to the groups.
type writeRequest struct {
	kind     writeKind
	grouping Grouping
	key      string
	families map[string]*family
	// reject, when set, rejects the push without checking it.
	reject error
	// ttl, when set, is the TTL given by the push's header.
	ttl *time.Duration
	// keys are the groups an expiry request is for.
	keys []string
	time time.Time
	// pushTimeFamily is push_time_seconds as a successful push sets it,
	// built before the request is applied.
	pushTimeFamily *family
	// template, when set, becomes the group's body template once the push
	// is applied.
	template *bodyTemplate
	// done receives the outcome and is closed; nil when nobody waits.
	done chan error
}

// group is one push group. It is replaced, never modified, on every write.
type group struct {
	key      string
	grouping Grouping
	// families includes push_time_seconds and push_failure_time_seconds.
	families    map[string]*family
	pushTime    time.Time
	failureTime time.Time
	ttl         groupTTL
	// expired is set once the zero action ran; the next push clears it.
	expired bool
	// recordFamilies, when not nil, are the sorted names of the pushed
	// families of the body template the group was last put with; while
	// they still name exactly the group's pushed families, commits write
	// the families in their order instead of sorting the names again.
	recordFamilies []string
}

// Store holds every push group in memory, indexed for exposition and the
// consistency check, and commits each change through a Persister before
// acknowledging it. Each write is applied by the goroutine that submits it,
// one at a time in the order they take writeMu, into the newest batch; one
// committer goroutine commits the batches in that order. Readers take a
// read lock and see every applied write, committed or queued for commit.
type Store struct {
	logger   *slog.Logger
	db       Persister
	now      func() time.Time
	own      prometheus.Gatherer
	reserved map[string]dto.MetricType
	expiry   Expiry
	limits   Limits

	// writeMu serialises writes: applying one and adding it to a batch,
	// and the committer taking a batch or undoing failed ones.
	writeMu sync.Mutex
	// room is signalled when queued writes were taken for commit, or at
	// Close.
	room *sync.Cond
	// queued are the applied batches not yet taken by the committer,
	// oldest first, holding queuedWrites writes.
	queued       []*batch
	queuedWrites int
	closed       bool
	// kick wakes the committer after a write was queued.
	kick    chan struct{}
	stopped chan struct{}

	mu     sync.RWMutex
	groups map[string]*group
	names  map[string]*nameEntry
	// sortedNames caches the sorted index names; nil after a name came or
	// went. Readers rebuild it under sortedMu while holding mu for reading.
	sortedNames atomic.Pointer[[]string]
	sortedMu    sync.Mutex
	// floatSeries counts histogram series with fractional counts, which
	// OpenMetrics 1.0 cannot carry.
	floatSeries int

	// templates holds the *bodyTemplate of the last text body pushed to
	// each group, by group key.
	templates sync.Map

	// persistErr is the error of the last commit while the storage cannot
	// be written; nil when it can.
	persistErr atomic.Pointer[error]

	// records are the stored forms commit hands to the Persister, reused
	// from one commit to the next; only the committer goroutine uses them.
	records []persistence.Group

	// ownCache is only used holding writeMu.
	ownCache     map[string]dto.MetricType
	ownCacheTime time.Time

	metrics *storeMetrics
}

// StoreOptions configures a Store.
type StoreOptions struct {
	// Persister stores groups durably; nil keeps them in memory only.
	Persister Persister
	// Own gathers pushrelay's own metrics, which pushed metrics must be
	// consistent with; nil means none.
	Own prometheus.Gatherer
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Reserved are metric names, with their types, that another part of
	// pushrelay exposes (span metrics); pushes may not give them another
	// type.
	Reserved map[string]dto.MetricType
	// Expiry resolves TTLs and schedules expiries; nil means groups never
	// expire.
	Expiry Expiry
	// Limits bound what pushes may store.
	Limits Limits
	// Logger defaults to a no-op logger.
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// NewStore restores every group from opts.Persister and starts the
// committer. Close must be called to stop it.
func NewStore(opts StoreOptions) (*Store, error) {
	s := &Store{
		logger:   opts.Logger,
		db:       opts.Persister,
		now:      opts.Now,
		own:      opts.Own,
		reserved: opts.Reserved,
		expiry:   opts.Expiry,
		limits:   opts.Limits,
		kick:     make(chan struct{}, 1),
		stopped:  make(chan struct{}),
		groups:   map[string]*group{},
		names:    map[string]*nameEntry{},
		metrics:  newStoreMetrics(opts.Registerer),
	}
	if s.logger == nil {
		s.logger = promslog.NewNopLogger()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.own == nil {
		s.own = prometheus.Gatherers{}
	}
	if s.db != nil {
		if err := s.restore(); err != nil {
			return nil, err
		}
	}
	s.room = sync.NewCond(&s.writeMu)
	s.metrics.groups.Set(float64(len(s.groups)))
	go s.commitLoop()
	return s, nil
}

// restore loads every persisted group into memory. A group whose labels no
// push URL takes any more (a value that is not UTF-8, stored by earlier
// versions) holds nothing that can be exposed: it is logged and removed
// from the file.
func (s *Store) restore() error {
	var unusable []persistence.Op
	err := s.db.Load(func(pg *persistence.Group) error {
		grouping := recordGrouping(pg)
		if err := grouping.checkUTF8(); err != nil {
			s.logger.Warn("removing a stored group that no push URL can name", "group", grouping, "err", err)
			unusable = append(unusable, persistence.Op{Key: grouping.Key()})
			return nil
		}
		g, err := groupFromRecord(pg, grouping)
		if err != nil {
			return err
		}
		if s.timestampsHeld(g.key, g.families[pushTimeName]) {
			s.logger.Warn("stored group exposes the same push_time_seconds and push_failure_time_seconds series as another group; one group's are shown for both until one of them is deleted", "group", grouping)
		}
		s.install(g.key, nil, g)
		s.scheduleExpiry(g.key, g)
		return nil
	})
	if err != nil || len(unusable) == 0 {
		return err
	}
	return s.db.Commit(unusable)
}

// recordGrouping returns the grouping labels of a stored group.
func recordGrouping(pg *persistence.Group) Grouping {
	grouping := make(Grouping, len(pg.Labels))
	for _, l := range pg.Labels {
		grouping[l.Name] = l.Value
	}
	return grouping
}

// groupFromRecord rebuilds a group from its stored form and grouping labels.
func groupFromRecord(pg *persistence.Group, grouping Grouping) (*group, error) {
	key := grouping.Key()
	gl := groupingLabels(grouping)
	g := &group{key: key, grouping: grouping, families: make(map[string]*family, len(pg.Families)+2)}
	if pg.PushTime != 0 {
		g.pushTime = time.Unix(0, pg.PushTime)
	}
	if pg.FailureTime != 0 {
		g.failureTime = time.Unix(0, pg.FailureTime)
	}
	g.ttl = groupTTL{d: time.Duration(pg.TTL.Nanos), action: pg.TTL.Action, source: pg.TTL.Source}
	g.expired = pg.TTL.Expired
	for i := range pg.Families {
		pf := &pg.Families[i]
		mf := &dto.MetricFamily{Name: &pf.Name, Type: dto.MetricType(pf.Type).Enum()}
		if pf.HasHelp {
			mf.Help = &pf.Help
		}
		for _, b := range pf.Metrics {
			m := &dto.Metric{}
			if err := unmarshalMetric(b, m); err != nil {
				return nil, fmt.Errorf("group %s, family %q: %w", grouping, pf.Name, err)
			}
			mf.Metric = append(mf.Metric, m)
		}
		f, err := newFamily(fromDto(mf), grouping, gl, key, time.Unix(0, pf.Time))
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", grouping, err)
		}
		g.families[f.name] = f
	}
	g.families[pushTimeName] = timestampFamily(pushTimeName, pushTimeHelp, g.grouping, g.key, g.pushTime, unixNanos(pg.PushWritten))
	g.families[pushFailureTimeName] = timestampFamily(pushFailureTimeName, pushFailureTimeHelp, g.grouping, g.key, g.failureTime, unixNanos(pg.FailureWritten))
	g.setStaleFamily(unixNanos(pg.StaleWritten))
	return g, nil
}

// unixNanos is the inverse of time.Time.UnixNano, with 0 for the zero time.
func unixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// nanos is time.Time.UnixNano with 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// recordInto sets pg to the stored form of g, reusing pg's slices.
func (g *group) recordInto(pg *persistence.Group) {
	labels := pg.Labels[:0]
	for _, n := range g.grouping.sortedNames() {
		labels = append(labels, persistence.Label{Name: n, Value: g.grouping[n]})
	}
	names := g.recordFamilies
	if !g.pushesExactly(names) {
		names = g.familyNames()
	}
	families := pg.Families[:0]
	for _, name := range names {
		if isGatewayFamily(name) {
			continue
		}
		f := g.families[name]
		if len(families) == cap(families) {
			families = append(families, persistence.Family{})
		} else {
			families = families[:len(families)+1]
		}
		pf := &families[len(families)-1]
		metrics := pf.Metrics[:0]
		for _, se := range f.series {
			metrics = append(metrics, se.metric())
		}
		*pf = persistence.Family{Name: f.name, Help: f.help, HasHelp: f.hasHelp, Type: int32(f.typ), Time: f.time.UnixNano(), Metrics: metrics}
	}
	*pg = persistence.Group{
		Labels:         labels,
		PushTime:       nanos(g.pushTime),
		FailureTime:    nanos(g.failureTime),
		PushWritten:    nanos(g.families[pushTimeName].time),
		FailureWritten: nanos(g.families[pushFailureTimeName].time),
		TTL:            persistence.TTL{Nanos: int64(g.ttl.d), Source: g.ttl.source, Action: g.ttl.action, Expired: g.expired},
		Families:       families,
	}
	if f := g.families[pushStaleName]; f != nil {
		pg.StaleWritten = nanos(f.time)
	}
}

// releaseRecord drops what pg refers to, keeping its slices' capacity for
// the next recordInto.
func releaseRecord(pg *persistence.Group) {
	clear(pg.Labels)
	for i := range pg.Families {
		clear(pg.Families[i].Metrics)
		pg.Families[i] = persistence.Family{Metrics: pg.Families[i].Metrics[:0]}
	}
	*pg = persistence.Group{Labels: pg.Labels[:0], Families: pg.Families[:0]}
}

// pushesExactly reports whether names, none of them a gateway family's,
// are the names of all of g's pushed families; false for nil.
func (g *group) pushesExactly(names []string) bool {
	if names == nil {
		return false
	}
	pushed := len(g.families)
	for _, name := range [...]string{pushTimeName, pushFailureTimeName, pushStaleName} {
		if g.families[name] != nil {
			pushed--
		}
	}
	if pushed != len(names) {
		return false
	}
	for _, name := range names {
		if g.families[name] == nil || isGatewayFamily(name) {
			return false
		}
	}
	return true
}

// familyNames returns the names of g's families, sorted.
func (g *group) familyNames() []string {
	names := make([]string, 0, len(g.families))
	for n := range g.families {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// setStaleFamily adds push_stale to a group with a TTL and removes it from
// one without.
func (g *group) setStaleFamily(written time.Time) {
	if g.ttl.d <= 0 {
		delete(g.families, pushStaleName)
		return
	}
	g.families[pushStaleName] = staleFamily(g.grouping, g.key, g.expired, written)
}

// isGatewayFamily reports whether a family is generated by the gateway
// rather than pushed.
func isGatewayFamily(name string) bool {
	return name == pushTimeName || name == pushFailureTimeName || name == pushStaleName
}

// clone returns a copy of g whose family map may be changed.
func (g *group) clone() *group {
	c := *g
	c.families = make(map[string]*family, len(g.families))
	for n, f := range g.families {
		c.families[n] = f
	}
	return &c
}

// enqueue applies req to the memory state and queues it for commit. It
// blocks while queueCapacity writes wait for their commit.
func (s *Store) enqueue(req *writeRequest) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for !s.closed && s.queuedWrites >= queueCapacity {
		s.room.Wait()
	}
	if s.closed {
		return ErrStoreClosed
	}
	var b *batch
	if n := len(s.queued); n > 0 && len(s.queued[n-1].reqs) < maxBatch {
		b = s.queued[n-1]
	} else {
		b = &batch{start: s.now(), expired: map[string]int{}}
		s.queued = append(s.queued, b)
	}
	s.applyOrCrash(b, req)
	s.queuedWrites++
	s.wakeCommitter()
	return nil
}

// wakeCommitter makes the committer look at the queue again.
func (s *Store) wakeCommitter() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close commits every queued write and stops the committer; writes
// submitted after it, and writes still waiting for room in a full queue,
// fail with ErrStoreClosed.
func (s *Store) Close() {
	s.writeMu.Lock()
	if !s.closed {
		s.closed = true
		s.room.Broadcast()
		s.wakeCommitter()
	}
	s.writeMu.Unlock()
	<-s.stopped
}

// Healthy reports whether the store can take writes: the write lock can be
// taken and the write queue is not full.
func (s *Store) Healthy() error {
	s.writeMu.Lock()
	full := s.queuedWrites >= queueCapacity
	s.writeMu.Unlock()
	if full {
		return errors.New("write queue is full")
	}
	if err := s.persistErr.Load(); err != nil {
		return fmt.Errorf("the persistence file cannot be written: %w", *err)
	}
	return nil
}

// probeInterval is how often a failing persistence is probed for recovery.
const probeInterval = 5 * time.Second

// commitLoop commits the queued batches in order, each while the writes
// after it are applied and queued, and answers the writes of each
// committed batch. It returns once the store is closed and every queued
// batch is committed.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	probe := time.NewTicker(probeInterval)
	defer probe.Stop()
	for {
		s.writeMu.Lock()
		if len(s.queued) == 0 {
			closed := s.closed
			s.writeMu.Unlock()
			if closed {
				return
			}
			select {
			case <-s.kick:
			case <-probe.C:
				s.probe()
			}
			continue
		}
		b := s.queued[0]
		s.queued[0] = nil
		s.queued = s.queued[1:]
		s.queuedWrites -= len(b.reqs)
		s.room.Broadcast()
		s.writeMu.Unlock()
		if b.err = s.commit(b.changes); b.err != nil && !errors.Is(b.err, persistence.ErrUnsynced) {
			s.undo(b)
			continue
		}
		s.completed(b)
		// The answered handlers wait in this goroutine's run queue;
		// yielding lets them write their responses before the next
		// commit's work, instead of after it.
		runtime.Gosched()
	}
}

// probe clears the persistence error once the storage can be written
// again.
func (s *Store) probe() {
	if s.persistErr.Load() != nil && s.db != nil {
		if err := s.db.Probe(); err == nil {
			s.persistErr.Store(nil)
			s.logger.Info("persistence file is writable again")
		}
	}
}

// change records one group replacement of a batch, for persisting and undo.
type change struct {
	key      string
	old, new *group
}

// batch is a set of applied writes committed together.
type batch struct {
	start   time.Time
	reqs    []*writeRequest
	results []error
	changes []change
	expired map[string]int
	// err is the outcome of the commit.
	err error
}

// applyOrCrash is apply, but a panic in it, a bug that may leave the memory
// state half changed, crashes the process instead of being recovered by the
// HTTP server: a restart restores the committed state from the persistence
// file.
func (s *Store) applyOrCrash(b *batch, req *writeRequest) {
	defer func() {
		if r := recover(); r != nil {
			go panic(fmt.Sprintf("applying a write: %v\n\n%s", r, debug.Stack()))
			select {}
		}
	}()
	s.apply(b, req)
}

// apply applies req to the memory state and adds it to b. Must be called
// holding writeMu.
func (s *Store) apply(b *batch, req *writeRequest) {
	own := s.ownFamilies()
	replace := func(key string, old, g *group) {
		s.install(key, old, g)
		b.changes = append(b.changes, change{key: key, old: old, new: g})
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var result error
	switch req.kind {
	case writeDelete:
		if old := s.groups[req.key]; old != nil {
			replace(req.key, old, nil)
		}
	case writeWipe:
		for _, key := range s.sortedGroupKeys() {
			replace(key, s.groups[key], nil)
		}
	case writeExpire:
		now := s.now()
		for _, key := range req.keys {
			g := s.groups[key]
			if g == nil || g.ttl.d <= 0 || g.expired || g.pushTime.Add(g.ttl.d).After(now) {
				continue
			}
			if g.ttl.action == actionDelete {
				replace(key, g, nil)
			} else {
				replace(key, g, zeroedGroup(g, now))
			}
			b.expired[g.ttl.action]++
		}
	case writePut, writePost:
		old := s.groups[req.key]
		if err := s.checkLimits(req, old); err != nil {
			result = err
			break
		}
		// A new group whose timestamp series another group holds cannot
		// be exposed beside it: such a push is rejected without creating
		// the group.
		clash := old == nil && s.timestampsHeld(req.key, req.pushTimeFamily)
		err := req.reject
		if err == nil {
			err = s.check(req, old, own, clash)
		}
		if err != nil {
			result = &RejectedError{Err: err}
			if !clash {
				replace(req.key, old, failedGroup(old, req))
			}
			break
		}
		replace(req.key, old, appliedGroup(old, req, s.resolveTTL(req)))
		if req.template != nil {
			s.templates.Store(req.key, req.template)
		}
	}
	b.reqs = append(b.reqs, req)
	b.results = append(b.results, result)
	s.metrics.groups.Set(float64(len(s.groups)))
}

// completed records a committed batch and answers its requests. A batch
// whose commit reached the file but could not be synced is kept, as the
// file holds it, and its requests are answered with a *PersistError.
func (s *Store) completed(b *batch) {
	switch {
	case b.err != nil:
		err := b.err
		s.persistErr.Store(&err)
		s.logger.Error("writes reached the persistence file but could not be synced to disk; they are kept, as the file holds them", "writes", len(b.reqs), "err", err)
		b.fail(err)
	case len(b.changes) > 0 && s.db != nil:
		s.persistErr.Store(nil)
	}
	s.scheduleChanges(b.changes)
	for action, n := range b.expired {
		s.metrics.expirations.WithLabelValues(action).Add(float64(n))
	}
	s.answer(b)
}

// undo handles a batch whose commit failed: it undoes the batch and every
// batch queued after it, applied on top of it, and fails their writes.
func (s *Store) undo(b *batch) {
	err := b.err
	s.persistErr.Store(&err)
	s.writeMu.Lock()
	undone := append([]*batch{b}, s.queued...)
	s.queued, s.queuedWrites = nil, 0
	s.room.Broadcast()
	s.mu.Lock()
	for i := len(undone) - 1; i >= 0; i-- {
		changes := undone[i].changes
		for j := len(changes) - 1; j >= 0; j-- {
			c := changes[j]
			s.install(c.key, c.new, c.old)
		}
	}
	s.metrics.groups.Set(float64(len(s.groups)))
	s.mu.Unlock()
	s.writeMu.Unlock()
	for _, u := range undone {
		s.logger.Error("cannot persist writes; they were not applied", "writes", len(u.reqs), "err", err)
		u.fail(err)
		s.answer(u)
	}
}

// fail makes a *PersistError of err the result of every request of b.
func (b *batch) fail(err error) {
	for i := range b.results {
		b.results[i] = &PersistError{Err: err}
	}
}

// answer sends every request of b its result.
func (s *Store) answer(b *batch) {
	s.metrics.batchSize.Observe(float64(len(b.reqs)))
	s.metrics.writeDuration.Observe(s.now().Sub(b.start).Seconds())
	for i, req := range b.reqs {
		if req.done != nil {
			if b.results[i] != nil {
				req.done <- b.results[i]
			}
			close(req.done)
		} else if b.results[i] != nil {
			s.logger.Error("queued write failed", "group", req.grouping, "err", b.results[i])
		}
	}
}

// commit persists the final state of every group the batch changed.
func (s *Store) commit(changes []change) error {
	if s.db == nil || len(changes) == 0 {
		return nil
	}
	latest := make(map[string]*group, len(changes))
	order := make([]string, 0, len(changes))
	for _, c := range changes {
		if _, seen := latest[c.key]; !seen {
			order = append(order, c.key)
		}
		latest[c.key] = c.new
	}
	if n := len(order) - cap(s.records); n > 0 {
		s.records = append(s.records[:cap(s.records)], make([]persistence.Group, n)...)
	}
	records := s.records[:len(order)]
	ops := make([]persistence.Op, len(order))
	for i, key := range order {
		ops[i] = persistence.Op{Key: key}
		if g := latest[key]; g != nil {
			g.recordInto(&records[i])
			ops[i].Group = &records[i]
		}
	}
	start := time.Now()
	err := s.db.Commit(ops)
	s.metrics.commitDuration.Observe(time.Since(start).Seconds())
	for i := range records {
		releaseRecord(&records[i])
	}
	return err
}

// checkLimits decides whether applying req to old stays within the group
// and series limits. Must be called holding s.mu.
func (s *Store) checkLimits(req *writeRequest, old *group) error {
	if max := s.limits.MaxGroups; max > 0 && old == nil && len(s.groups) >= max {
		return &LimitError{Status: http.StatusInsufficientStorage, Msg: fmt.Sprintf(
			"cannot create group %s: pushrelay holds the maximum of %d groups (--push.max-groups)", req.grouping, max)}
	}
	max := s.limits.MaxSeriesPerGroup
	if max <= 0 || req.reject != nil {
		return nil
	}
	n := 0
	for _, f := range req.families {
		n += len(f.series)
	}
	if old != nil && req.kind == writePost {
		for name, f := range old.families {
			if _, replaced := req.families[name]; !replaced && !isGatewayFamily(name) {
				n += len(f.series)
			}
		}
	}
	if n > max {
		return &LimitError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf(
			"group %s would hold %d series, more than the limit of %d (--push.max-series-per-group)", req.grouping, n, max)}
	}
	return nil
}

// resolveTTL returns the TTL a push gives its group: the header's, else the
// expiry policy's.
func (s *Store) resolveTTL(req *writeRequest) groupTTL {
	if s.expiry == nil {
		if req.ttl != nil {
			return groupTTL{d: *req.ttl, action: actionZero, source: sourceHeader}
		}
		return groupTTL{}
	}
	if req.ttl != nil {
		return groupTTL{d: *req.ttl, action: s.expiry.DefaultAction(), source: sourceHeader}
	}
	d, action, source := s.expiry.ResolveTTL(req.grouping)
	if d <= 0 && source == sourceFlag {
		// Expiry is off: the group looks exactly as in the Pushgateway.
		return groupTTL{}
	}
	return groupTTL{d: d, action: action, source: source}
}

// scheduleChanges tells the expiry about the deadlines of committed
// changes.
func (s *Store) scheduleChanges(changes []change) {
	if s.expiry == nil {
		return
	}
	seen := make(map[string]bool, len(changes))
	for i := len(changes) - 1; i >= 0; i-- {
		c := changes[i]
		if seen[c.key] {
			continue
		}
		seen[c.key] = true
		s.scheduleExpiry(c.key, c.new)
	}
}

// scheduleExpiry sets or cancels the deadline of group g (nil when deleted).
func (s *Store) scheduleExpiry(key string, g *group) {
	if s.expiry == nil {
		return
	}
	if g == nil || g.ttl.d <= 0 || g.expired || g.pushTime.IsZero() {
		s.expiry.Cancel(key)
		return
	}
	s.expiry.Schedule(key, g.pushTime.Add(g.ttl.d))
}

// appliedGroup returns old with the pushed families of req applied.
func appliedGroup(old *group, req *writeRequest, ttl groupTTL) *group {
	var g *group
	switch {
	case old == nil:
		g = &group{key: req.key, grouping: req.grouping, families: make(map[string]*family, len(req.families)+2)}
	case req.kind == writePut:
		g = &group{key: old.key, grouping: old.grouping, failureTime: old.failureTime, families: make(map[string]*family, len(req.families)+2)}
		g.families[pushFailureTimeName] = old.families[pushFailureTimeName]
	default:
		// Families a POST does not replace keep their values, zeroed
		// ones included.
		g = old.clone()
	}
	// A family named like an own metric keeps its pushed help; the
	// exposition shows the own help, as the Pushgateway's does.
	for name, f := range req.families {
		g.families[name] = f
	}
	g.pushTime = req.time
	g.ttl, g.expired = ttl, false
	g.recordFamilies = nil
	if req.kind == writePut && req.template != nil {
		g.recordFamilies = req.template.lines.families
	}
	g.families[pushTimeName] = req.pushTimeFamily
	if old == nil {
		g.families[pushFailureTimeName] = timestampFamily(pushFailureTimeName, pushFailureTimeHelp, g.grouping, g.key, time.Time{}, req.time)
	}
	g.setStaleFamily(req.time)
	return g
}

// zeroedGroup returns g with every pushed sample value set to 0 and marked
// expired; labels, families and push times are kept.
func zeroedGroup(g *group, now time.Time) *group {
	z := g.clone()
	for name, f := range g.families {
		if !isGatewayFamily(name) {
			z.families[name] = f.zeroed()
		}
	}
	z.expired = true
	z.setStaleFamily(now)
	return z
}

// failedGroup returns old (or a new empty group) with its failure time set.
func failedGroup(old *group, req *writeRequest) *group {
	var g *group
	if old == nil {
		g = &group{key: req.key, grouping: req.grouping, families: make(map[string]*family, 2)}
		g.families[pushTimeName] = timestampFamily(pushTimeName, pushTimeHelp, g.grouping, g.key, time.Time{}, req.time)
	} else {
		g = old.clone()
	}
	g.failureTime = req.time
	g.families[pushFailureTimeName] = timestampFamily(pushFailureTimeName, pushFailureTimeHelp, g.grouping, g.key, g.failureTime, req.time)
	return g
}

// install replaces group old by g under key (either may be nil) and updates
// the index. Must be called holding s.mu for writing.
func (s *Store) install(key string, old, g *group) {
	if old != nil {
		for name, f := range old.families {
			var nf *family
			if g != nil {
				nf = g.families[name]
			}
			switch {
			case nf == f:
			case nf == nil:
				s.removeFamily(f)
			default:
				s.replaceFamily(f, nf)
			}
		}
	}
	if g == nil {
		delete(s.groups, key)
		s.templates.Delete(key)
		return
	}
	for name, f := range g.families {
		if old == nil || old.families[name] == nil {
			s.addFamily(f)
		}
	}
	s.groups[key] = g
}

// replaceFamily swaps a group's family for a new version of the same name.
// Series of the same identity replace each other in place; only those that
// are gone are deleted. Must be called holding s.mu for writing.
func (s *Store) replaceFamily(old, f *family) {
	e := s.names[f.name]
	if e == nil || e.typ != f.typ {
		s.removeFamily(old)
		s.addFamily(f)
		return
	}
	s.setHelp(e, f)
	// Both lists are sorted: walk them together. A series of the same
	// identity as one of old takes over its slot; the series of old that
	// f does not have are dropped.
	i := 0
	for _, se := range f.series {
		if i == len(old.series) || old.series[i].id != se.id {
			for i < len(old.series) && old.series[i].key < se.key {
				s.floatSeries += e.drop(old.series[i])
				i++
			}
		}
		if prev := sameIdentity(old.series, &i, se); prev != nil && prev.indexed() {
			s.floatSeries += e.replace(prev, se)
			continue
		}
		s.floatSeries += e.put(se)
	}
	for ; i < len(old.series); i++ {
		s.floatSeries += e.drop(old.series[i])
	}
}

// setHelp updates the help string of an index entry and its cached
// headers. Must be called holding s.mu for writing.
func (s *Store) setHelp(e *nameEntry, f *family) {
	if e.headers[0] == nil || e.help != f.help || e.hasHelp != f.hasHelp {
		e.help, e.hasHelp = f.help, f.hasHelp
		e.headers[0] = familyHeader(f.name, f.help, f.hasHelp, e.typ, false)
		e.headers[1] = familyHeader(f.name, f.help, f.hasHelp, e.typ, true)
		e.headerCache.reset()
	}
}

// addFamily indexes f. Must be called holding s.mu for writing.
func (s *Store) addFamily(f *family) {
	e := s.names[f.name]
	if e == nil {
		e = newNameEntry(f.typ)
		s.names[f.name] = e
		s.sortedNames.Store(nil)
	}
	s.setHelp(e, f)
	e.holders++
	for _, se := range f.series {
		s.floatSeries += e.put(se)
	}
}

// removeFamily removes f from the index. Must be called holding s.mu for
// writing.
func (s *Store) removeFamily(f *family) {
	e := s.names[f.name]
	if e == nil {
		return
	}
	for _, se := range f.series {
		s.floatSeries += e.drop(se)
	}
	e.holders--
	if e.holders <= 0 {
		delete(s.names, f.name)
		s.sortedNames.Store(nil)
	}
}

// sortedNameList returns the indexed metric names, sorted. Must be called holding
// s.mu; the result must not be modified.
func (s *Store) sortedNameList() []string {
	if p := s.sortedNames.Load(); p != nil {
		return *p
	}
	// Several readers may hold mu at once: one builds the list.
	s.sortedMu.Lock()
	defer s.sortedMu.Unlock()
	if p := s.sortedNames.Load(); p != nil {
		return *p
	}
	names := make([]string, 0, len(s.names))
	for n := range s.names {
		names = append(names, n)
	}
	sort.Strings(names)
	s.sortedNames.Store(&names)
	return names
}

// sortedGroupKeys returns the keys of all groups, sorted. Must be called
// holding s.mu.
func (s *Store) sortedGroupKeys() []string {
	keys := make([]string, 0, len(s.groups))
	for k := range s.groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ownFamilies returns the names and types of the own metrics,
// gathered at most once per ownRefresh. Must be called holding writeMu.
func (s *Store) ownFamilies() map[string]dto.MetricType {
	now := time.Now()
	if s.ownCache != nil && now.Sub(s.ownCacheTime) < ownRefresh {
		return s.ownCache
	}
	mfs, err := s.own.Gather()
	if err != nil {
		s.logger.Warn("cannot gather own metrics for the consistency check", "err", err)
	}
	own := make(map[string]dto.MetricType, len(mfs)+len(s.reserved))
	for name, typ := range s.reserved {
		own[name] = typ
	}
	for _, mf := range mfs {
		own[mf.GetName()] = mf.GetType()
	}
	s.ownCache, s.ownCacheTime = own, now
	return own
}

// multiError formats several errors the way client_golang's MultiError does.
func multiError(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d error(s) occurred:", len(errs))
	for _, err := range errs {
		fmt.Fprintf(&sb, "\n* %s", err)
	}
	return errors.New(sb.String())
}
