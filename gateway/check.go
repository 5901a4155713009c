package gateway

import (
	"fmt"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func unmarshalMetric(b []byte, m *dto.Metric) error {
	return proto.Unmarshal(b, m)
}

// check decides whether applying req to group old keeps every exposition
// consistent: the same rules as a client_golang gather of the own registry
// plus all groups, but computed from the index in time proportional to the
// size of the push. clash tells that the push would create a group whose
// timestamp series another group holds (see timestampsHeld); their errors
// come after those of the pushed families. Must be called holding s.mu.
func (s *Store) check(req *writeRequest, old *group, own map[string]dto.MetricType, clash bool) error {
	// replaced reports whether old's family of this name goes away.
	replaced := func(name string) bool {
		if old == nil {
			return false
		}
		if _, ok := old.families[name]; !ok {
			return false
		}
		if req.kind == writePut {
			return true
		}
		_, pushed := req.families[name]
		return pushed
	}
	// stored returns the type of name in the store after the push removed
	// what it replaces.
	stored := func(name string) (dto.MetricType, bool) {
		e := s.names[name]
		if e == nil {
			return 0, false
		}
		holders := e.holders
		if replaced(name) {
			holders--
		}
		return e.typ, holders > 0
	}
	// existing returns the type of a name that is exposed beside the push.
	existing := func(name string) (dto.MetricType, bool) {
		if t, ok := own[name]; ok {
			return t, true
		}
		return stored(name)
	}

	// The errors of each family, reported in the order of their names.
	type familyErrors struct {
		name string
		errs []error
	}
	var found []familyErrors
	for name, f := range req.families {
		if errs := s.checkFamily(req, old, own, name, f, stored, existing); len(errs) > 0 {
			found = append(found, familyErrors{name, errs})
		}
	}
	slices.SortFunc(found, func(a, b familyErrors) int { return strings.Compare(a.name, b.name) })
	var errs []error
	for _, fe := range found {
		errs = append(errs, fe.errs...)
	}
	if clash {
		errs = append(errs, clashErrors(req)...)
	}
	return multiError(errs)
}

// timestampsHeld reports whether another group than the one of key holds
// the series of its push_time_seconds family pushTime, and with it those of
// push_failure_time_seconds. Grouping keys that differ only in an empty
// instance ({job="a"} and {job="a",instance=""}) name two groups, yet the
// timestamp series of both carry the same labels, since a group without an
// instance label is exposed with instance="". Must be called holding s.mu.
func (s *Store) timestampsHeld(key string, pushTime *family) bool {
	e := s.names[pushTimeName]
	if e == nil {
		return false
	}
	cur, ok := e.lookup(pushTime.series[0].id)
	return ok && cur.groupKey != key
}

// clashErrors returns the gather errors of the timestamp series of the
// group a push would create, when another group holds them: those of
// push_time_seconds as the push would set it, then of
// push_failure_time_seconds at 0, as the Pushgateway words them.
func clashErrors(req *writeRequest) []error {
	failure := timestampFamily(pushFailureTimeName, pushFailureTimeHelp, req.grouping, req.key, time.Time{}, req.time)
	return []error{duplicateSeriesError(req.pushTimeFamily.name, req.pushTimeFamily.series[0]), duplicateSeriesError(failure.name, failure.series[0])}
}

// duplicateError is client_golang's gather error for a series of family
// name collected twice, m its metric.
func duplicateError(name string, m *dto.Metric) error {
	return fmt.Errorf("collected metric %q { %s} was collected before with the same name and label values", name, m)
}

// duplicateSeriesError is duplicateError for the series se of family name.
func duplicateSeriesError(name string, se *series) error {
	m := &dto.Metric{}
	_ = unmarshalMetric(se.metric(), m)
	return duplicateError(name, m)
}

// checkFamily returns what is wrong with the pushed family f of name, in
// the order client_golang reports it. Must be called holding s.mu.
func (s *Store) checkFamily(req *writeRequest, old *group, own map[string]dto.MetricType, name string, f *family,
	stored, existing func(string) (dto.MetricType, bool)) []error {
	errs := slices.Clip(f.invalid) // appending must not write into f
	if t, ok := own[name]; ok && t != f.typ {
		return append(errs, fmt.Errorf("gathered metric family %s has type %s but should have %s", name, f.typ, t))
	}
	if t, ok := stored(name); ok && t != f.typ {
		for _, m := range f.Dto().Metric {
			errs = append(errs, fmt.Errorf("collected metric %q { %s} is not a %s", name, m, t))
		}
		return errs
	}
	if err := suffixCollision(f, existing, req.families); err != nil {
		return append(errs, err)
	}
	e := s.names[name]
	if e == nil {
		return errs
	}
	// A series whose identity the group already holds cannot clash with
	// another group: only look up the others.
	var prev []*series
	if old != nil {
		if of := old.families[name]; of != nil {
			prev = of.series
		}
	}
	i := 0
	for _, se := range f.series {
		if p := sameIdentity(prev, &i, se); p != nil && p.indexed() {
			continue
		}
		if cur, ok := e.lookup(se.id); ok && cur.groupKey != req.key {
			errs = append(errs, duplicateSeriesError(name, se))
		}
	}
	return errs
}

// suffixCollision reports a family whose name clashes with the _count, _sum
// or _bucket series of a summary or histogram, as client_golang does.
func suffixCollision(f *family, existing func(string) (dto.MetricType, bool), pushed map[string]*family) error {
	typeOf := func(name string) (dto.MetricType, bool) {
		if p, ok := pushed[name]; ok {
			return p.typ, true
		}
		return existing(name)
	}
	for _, suffix := range []string{"_count", "_sum", "_bucket"} {
		base, ok := strings.CutSuffix(f.name, suffix)
		if !ok {
			continue
		}
		switch t, _ := typeOf(base); {
		case t == dto.MetricType_SUMMARY && suffix != "_bucket" && hasType(typeOf, base):
			return fmt.Errorf("collected metric named %q collides with previously collected summary named %q", f.name, base)
		case t == dto.MetricType_HISTOGRAM && hasType(typeOf, base):
			return fmt.Errorf("collected metric named %q collides with previously collected histogram named %q", f.name, base)
		}
	}
	if f.typ != dto.MetricType_SUMMARY && f.typ != dto.MetricType_HISTOGRAM {
		return nil
	}
	suffixes := []string{"_count", "_sum"}
	if f.typ == dto.MetricType_HISTOGRAM {
		suffixes = append(suffixes, "_bucket")
	}
	for _, suffix := range suffixes {
		other := f.name + suffix
		if _, inPush := pushed[other]; inPush {
			// Reported from the other family's side.
			continue
		}
		if _, ok := existing(other); !ok {
			continue
		}
		if suffix == "_bucket" {
			return fmt.Errorf("collected histogram named %q collides with previously collected metric named %q", f.name, other)
		}
		return fmt.Errorf("collected histogram or summary named %q collides with previously collected metric named %q", f.name, other)
	}
	return nil
}

func hasType(typeOf func(string) (dto.MetricType, bool), name string) bool {
	_, ok := typeOf(name)
	return ok
}
