package gateway

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Push applies pushed families to the group named by grouping: replace
// replaces the whole group (PUT), otherwise only same-named families are
// replaced (POST). When wait is true it returns once the push is committed,
// with a *RejectedError for an invalid or inconsistent push and a
// *PersistError when the commit failed; otherwise it returns once the push
// is queued. mfs is modified.
func (s *Store) Push(grouping Grouping, mfs map[string]*dto.MetricFamily, replace, wait bool) error {
	parsed := make(map[string]*parsedFamily, len(mfs))
	for name, mf := range mfs {
		parsed[name] = fromDto(mf)
	}
	return s.push(grouping, parsed, replace, wait, nil)
}

// push is Push of parsed families with an optional TTL given by the push
// itself.
func (s *Store) push(grouping Grouping, mfs map[string]*parsedFamily, replace, wait bool, ttl *time.Duration) error {
	req := s.newPushRequest(grouping, grouping.Key(), replace, ttl, s.now(), nil)
	if err := s.addParsed(req, mfs); err != nil {
		return err
	}
	return s.write(req, wait)
}

// newPushRequest returns the write request of a push to the group with
// grouping and key received at now, with no families yet. prevPushTime,
// when set, is the push_time_seconds family of an earlier push to the
// group, which the new one is written from.
func (s *Store) newPushRequest(grouping Grouping, key string, replace bool, ttl *time.Duration, now time.Time, prevPushTime *family) *writeRequest {
	req := &writeRequest{kind: writePost, grouping: grouping, key: key, time: now, ttl: ttl}
	if prevPushTime != nil {
		req.pushTimeFamily = prevPushTime.withTimestamp(now, now)
	} else {
		req.pushTimeFamily = timestampFamily(pushTimeName, pushTimeHelp, grouping, req.key, now, now)
	}
	if replace {
		req.kind = writePut
	}
	req.families = make(map[string]*family, 16)
	return req
}

// addParsed builds the parsed families of a push into req. A limit or an
// unknown type fails the push; a timestamp rejects it.
func (s *Store) addParsed(req *writeRequest, mfs map[string]*parsedFamily) error {
	var gl []label
	for name, mf := range mfs {
		if req.reject != nil {
			break
		}
		// The gateway's own timestamp gauges always win, but a timestamp
		// on them still rejects the push.
		if name == pushTimeName || name == pushFailureTimeName {
			for _, m := range mf.metrics {
				if m.TimestampMs != nil {
					req.reject, req.families = errTimestamp, nil
				}
			}
			continue
		}
		if err := s.checkLabelLengths(mf); err != nil {
			return err
		}
		if gl == nil {
			gl = groupingLabels(req.grouping)
		}
		f, err := newFamily(mf, req.grouping, gl, req.key, req.time)
		if errors.Is(err, errTimestamp) {
			req.reject, req.families = err, nil
			break
		}
		if err != nil {
			return &RejectedError{Err: err}
		}
		req.families[name] = f
	}
	return nil
}

// checkLabelLengths enforces the label name and value limits on a pushed
// family.
func (s *Store) checkLabelLengths(p *parsedFamily) error {
	maxName, maxValue := s.limits.MaxLabelNameLength, s.limits.MaxLabelValueLength
	if maxName <= 0 && maxValue <= 0 {
		return nil
	}
	name := p.name
	check := func(ln, lv string) error {
		if maxName > 0 && len(ln) > maxName {
			return &LimitError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(
				"label name %.40q... of metric %q is %d bytes long, more than the limit of %d (--push.max-label-name-length)", ln, name, len(ln), maxName)}
		}
		if maxValue > 0 && len(lv) > maxValue {
			return &LimitError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(
				"value of label %q of metric %q is %d bytes long, more than the limit of %d (--push.max-label-value-length)", ln, name, len(lv), maxValue)}
		}
		return nil
	}
	for _, sm := range p.simple {
		for _, l := range sm.labels {
			if err := check(l.name, l.value); err != nil {
				return err
			}
		}
	}
	for _, m := range p.metrics {
		for _, lp := range m.Label {
			if err := check(lp.GetName(), lp.GetValue()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes the group named by grouping. It returns once the deletion
// is committed.
func (s *Store) Delete(grouping Grouping) error {
	return s.write(&writeRequest{kind: writeDelete, grouping: grouping, key: grouping.Key(), time: s.now()}, true)
}

// Expire applies the expiry action to every listed group whose last
// successful push is older than its TTL. It returns once the change is
// committed.
func (s *Store) Expire(keys []string) error {
	return s.write(&writeRequest{kind: writeExpire, keys: keys, time: s.now()}, true)
}

// Wipe removes every group. It returns once the deletion is committed.
func (s *Store) Wipe() error {
	return s.write(&writeRequest{kind: writeWipe, time: s.now()}, true)
}

func (s *Store) write(req *writeRequest, wait bool) error {
	if wait {
		req.done = make(chan error, 1)
	}
	if err := s.enqueue(req); err != nil {
		return err
	}
	if !wait {
		return nil
	}
	var first error
	for err := range req.done {
		if first == nil {
			first = err
		}
	}
	return first
}

// GroupView is a read-only snapshot of one group for the JSON API and the
// web UI.
type GroupView struct {
	Grouping    Grouping
	PushTime    time.Time
	FailureTime time.Time
	// TTL is the group's time to live (0 = never) and TTLSource where it
	// came from; TTLSource is empty when no TTL was ever decided.
	TTL       time.Duration
	TTLSource string
	TTLAction string
	// Stale is true while the group is zeroed by its TTL.
	Stale    bool
	Families []FamilyView
}

// FamilyView is one family of a GroupView.
type FamilyView struct {
	Time   time.Time
	Family *dto.MetricFamily
}

// LastPushSuccessful reports whether the last push to the group succeeded.
func (g *GroupView) LastPushSuccessful() bool {
	return !g.FailureTime.After(g.PushTime)
}

// Groups returns a snapshot of every group, sorted by grouping key, with
// families sorted by name. The result is owned by the caller. Groups are
// immutable, so the lock is held only to collect them and decoding happens
// outside it.
func (s *Store) Groups() []GroupView {
	s.mu.RLock()
	keys := s.sortedGroupKeys()
	groups := make([]*group, len(keys))
	for i, key := range keys {
		groups[i] = s.groups[key]
	}
	s.mu.RUnlock()
	views := make([]GroupView, len(groups))
	for i, g := range groups {
		v := GroupView{
			Grouping: maps.Clone(g.grouping), PushTime: g.pushTime, FailureTime: g.failureTime,
			TTL: g.ttl.d, TTLSource: g.ttl.source, TTLAction: g.ttl.action, Stale: g.expired,
		}
		for _, name := range g.familyNames() {
			f := g.families[name]
			v.Families = append(v.Families, FamilyView{Time: f.time, Family: f.Dto()})
		}
		views[i] = v
	}
	return views
}
