package staleness

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.yaml.in/yaml/v3"
)

// Action is what happens to a group whose TTL ran out.
type Action string

const (
	// ActionZero sets every sample value of the group to 0.
	ActionZero Action = "zero"
	// ActionDelete removes the group.
	ActionDelete Action = "delete"
)

// ParseAction accepts "zero" or "delete".
func ParseAction(s string) (Action, error) {
	switch a := Action(s); a {
	case ActionZero, ActionDelete:
		return a, nil
	}
	return "", fmt.Errorf("invalid staleness action %q: want zero or delete", s)
}

// Sources of a group's TTL, as stored with the group.
const (
	SourceFlag   = "flag"
	SourceRule   = "rule"
	SourceHeader = "header"
)

// Config is the staleness section of the configuration file.
type Config struct {
	// Rules are tried in order; the first whose matchers all match a
	// group's grouping labels decides its TTL.
	Rules []Rule `yaml:"rules"`
}

// Rule gives the groups it matches a TTL and an action.
type Rule struct {
	// Match maps grouping label names to regular expressions, anchored at
	// both ends; an absent label matches as the empty string.
	Match map[string]*regexp.Regexp
	// TTL is the time to live after the last successful push; 0 disables
	// expiry for the matched groups.
	TTL time.Duration
	// Action is empty when the rule leaves the default action.
	Action Action
	// Line is where the rule starts in the configuration file.
	Line int
}

// UnmarshalYAML decodes and validates one rule; errors name its line.
func (r *Rule) UnmarshalYAML(node *yaml.Node) error {
	r.Line = node.Line
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a staleness rule must be a mapping with match, ttl and action", node.Line)
	}
	var hasTTL bool
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, value := node.Content[i], node.Content[i+1]
		switch key.Value {
		case "match":
			var raw map[string]string
			if err := value.Decode(&raw); err != nil {
				return fmt.Errorf("line %d: match must map label names to regular expressions: %w", value.Line, err)
			}
			r.Match = make(map[string]*regexp.Regexp, len(raw))
			for name, expr := range raw {
				re, err := regexp.Compile("^(?:" + expr + ")$")
				if err != nil {
					return fmt.Errorf("line %d: invalid regular expression for label %q: %w", value.Line, name, err)
				}
				r.Match[name] = re
			}
		case "ttl":
			d, err := parseDuration(value.Value)
			if err != nil {
				return fmt.Errorf("line %d: invalid ttl %q: %w", value.Line, value.Value, err)
			}
			r.TTL, hasTTL = d, true
		case "action":
			a, err := ParseAction(value.Value)
			if err != nil {
				return fmt.Errorf("line %d: %w", value.Line, err)
			}
			r.Action = a
		default:
			return fmt.Errorf("line %d: unknown field %q in staleness rule", key.Line, key.Value)
		}
	}
	if !hasTTL {
		return fmt.Errorf("line %d: staleness rule has no ttl", node.Line)
	}
	return nil
}

// parseDuration accepts Go durations and a bare 0.
func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// matches reports whether every matcher of r accepts labels.
func (r *Rule) matches(labels map[string]string) bool {
	for name, re := range r.Match {
		if !re.MatchString(labels[name]) {
			return false
		}
	}
	return true
}

// Policy decides the TTL of a group from the command-line default and the
// rules of the configuration file.
type Policy struct {
	defaultTTL    time.Duration
	defaultAction Action
	rules         []Rule
}

// NewPolicy returns a policy with a default TTL (0 = none) and action, and
// the rules that override them.
func NewPolicy(defaultTTL time.Duration, defaultAction Action, rules []Rule) *Policy {
	return &Policy{defaultTTL: defaultTTL, defaultAction: defaultAction, rules: rules}
}

// Resolve returns the TTL, action and source for a group with these
// grouping labels. A zero TTL means the group never expires.
func (p *Policy) Resolve(labels map[string]string) (time.Duration, Action, string) {
	for i := range p.rules {
		r := &p.rules[i]
		if r.matches(labels) {
			action := r.Action
			if action == "" {
				action = p.defaultAction
			}
			return r.TTL, action, SourceRule
		}
	}
	return p.defaultTTL, p.defaultAction, SourceFlag
}

// DefaultAction is the action used when a rule or a header names none.
func (p *Policy) DefaultAction() Action { return p.defaultAction }
