package spanmetrics

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// FilterPolicy is one of Tempo's span filter policies; exactly one of its
// fields is set. Any matching Exclude rejects a span; otherwise any matching
// IncludeAny accepts it; otherwise every Include must match. With only
// IncludeAny policies, a span none of them matches is rejected.
type FilterPolicy struct {
	Include    *PolicyMatch `yaml:"include"`
	IncludeAny *PolicyMatch `yaml:"include_any"`
	Exclude    *PolicyMatch `yaml:"exclude"`
}

// PolicyMatch matches a span when all its attributes match.
type PolicyMatch struct {
	// MatchType is "strict" (typed equality) or "regex" (unanchored
	// regular expression on string values).
	MatchType  string           `yaml:"match_type"`
	Attributes []MatchAttribute `yaml:"attributes"`
}

// MatchAttribute is one key and value of a PolicyMatch. Keys are scoped as
// in TraceQL: resource.<attr>, span.<attr>, or the intrinsics name, status
// (STATUS_CODE_*) and kind (SPAN_KIND_*).
type MatchAttribute struct {
	Key   string `yaml:"key"`
	Value any    `yaml:"value"`

	re *regexp.Regexp
}

func (p *FilterPolicy) compile() error {
	n := 0
	for _, m := range []*PolicyMatch{p.Include, p.IncludeAny, p.Exclude} {
		if m == nil {
			continue
		}
		n++
		if err := m.compile(); err != nil {
			return err
		}
	}
	if n != 1 {
		return errors.New("exactly one of include, include_any and exclude must be set")
	}
	return nil
}

func (m *PolicyMatch) compile() error {
	switch m.MatchType {
	case "strict", "regex":
	default:
		return fmt.Errorf("invalid match_type %q: want strict or regex", m.MatchType)
	}
	if len(m.Attributes) == 0 {
		return errors.New("a policy needs at least one attribute")
	}
	for i := range m.Attributes {
		a := &m.Attributes[i]
		if a.Key == "" {
			return errors.New("attribute key must not be empty")
		}
		if m.MatchType == "regex" {
			s, ok := a.Value.(string)
			if !ok {
				return fmt.Errorf("regex value of %q must be a string", a.Key)
			}
			re, err := regexp.Compile(s)
			if err != nil {
				return fmt.Errorf("invalid regular expression for %q: %w", a.Key, err)
			}
			a.re = re
		}
	}
	return nil
}

// spanFilter applies compiled policies.
type spanFilter struct {
	include, includeAny, exclude []*PolicyMatch
}

func newSpanFilter(policies []FilterPolicy) *spanFilter {
	f := &spanFilter{}
	for _, p := range policies {
		switch {
		case p.Include != nil:
			f.include = append(f.include, p.Include)
		case p.IncludeAny != nil:
			f.includeAny = append(f.includeAny, p.IncludeAny)
		case p.Exclude != nil:
			f.exclude = append(f.exclude, p.Exclude)
		}
	}
	return f
}

func (f *spanFilter) empty() bool {
	return len(f.include)+len(f.includeAny)+len(f.exclude) == 0
}

// keep reports whether the span counts.
func (f *spanFilter) keep(res pcommon.Map, span ptrace.Span) bool {
	for _, m := range f.exclude {
		if m.matches(res, span) {
			return false
		}
	}
	for _, m := range f.includeAny {
		if m.matches(res, span) {
			return true
		}
	}
	if len(f.includeAny) > 0 && len(f.include) == 0 {
		return false
	}
	for _, m := range f.include {
		if !m.matches(res, span) {
			return false
		}
	}
	return true
}

func (m *PolicyMatch) matches(res pcommon.Map, span ptrace.Span) bool {
	for i := range m.Attributes {
		a := &m.Attributes[i]
		v, ok := lookupScoped(a.Key, res, span)
		if !ok {
			return false
		}
		if a.re != nil {
			if !a.re.MatchString(v.AsString()) {
				return false
			}
			continue
		}
		if !strictEqual(v, a.Value) {
			return false
		}
	}
	return true
}

// lookupScoped finds a policy key's value on a span.
func lookupScoped(key string, res pcommon.Map, span ptrace.Span) (pcommon.Value, bool) {
	switch key {
	case "name", "span.name":
		return pcommon.NewValueStr(span.Name()), true
	case "status", "span.status":
		return pcommon.NewValueStr(statusCodeName(span.Status().Code())), true
	case "kind", "span.kind":
		return pcommon.NewValueStr(spanKindName(span.Kind())), true
	}
	if k, ok := strings.CutPrefix(key, "resource."); ok {
		return res.Get(k)
	}
	if k, ok := strings.CutPrefix(key, "span."); ok {
		return span.Attributes().Get(k)
	}
	if v, ok := span.Attributes().Get(key); ok {
		return v, true
	}
	return res.Get(key)
}

// strictEqual compares an attribute with a configured value of any YAML
// scalar type.
func strictEqual(v pcommon.Value, want any) bool {
	switch w := want.(type) {
	case string:
		return v.Type() == pcommon.ValueTypeStr && v.Str() == w
	case bool:
		return v.Type() == pcommon.ValueTypeBool && v.Bool() == w
	case int:
		return v.Type() == pcommon.ValueTypeInt && v.Int() == int64(w) ||
			v.Type() == pcommon.ValueTypeDouble && v.Double() == float64(w)
	case float64:
		return v.Type() == pcommon.ValueTypeDouble && v.Double() == w ||
			v.Type() == pcommon.ValueTypeInt && float64(v.Int()) == w
	default:
		return false
	}
}
