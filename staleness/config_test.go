package staleness

import (
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPolicyResolve(t *testing.T) {
	rules := []Rule{
		{Match: map[string]*regexp.Regexp{"job": regexp.MustCompile("^(?:wm_.*)$")}, TTL: 10 * time.Minute},
		{Match: map[string]*regexp.Regexp{"job": regexp.MustCompile("^(?:backup)$")}, TTL: 0},
		{Match: map[string]*regexp.Regexp{"env": regexp.MustCompile("^(?:)$")}, TTL: time.Minute, Action: ActionDelete},
	}
	p := NewPolicy(time.Hour, ActionZero, rules)
	scenarios := map[string]struct {
		labels map[string]string
		ttl    time.Duration
		action Action
		source string
	}{
		"first rule":                 {map[string]string{"job": "wm_import", "env": ""}, 10 * time.Minute, ActionZero, SourceRule},
		"matchers are anchored":      {map[string]string{"job": "x_wm_import", "env": "prod"}, time.Hour, ActionZero, SourceFlag},
		"ttl 0 disables":             {map[string]string{"job": "backup"}, 0, ActionZero, SourceRule},
		"absent label matches empty": {map[string]string{"job": "other"}, time.Minute, ActionDelete, SourceRule},
		"flag default":               {map[string]string{"job": "other", "env": "prod"}, time.Hour, ActionZero, SourceFlag},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			ttl, action, source := p.Resolve(sc.labels)
			require.Equal(t, sc.ttl, ttl)
			require.Equal(t, sc.action, action)
			require.Equal(t, sc.source, source)
		})
	}
}

func TestParseAction(t *testing.T) {
	for _, ok := range []string{"zero", "delete"} {
		a, err := ParseAction(ok)
		require.NoError(t, err)
		require.Equal(t, ok, string(a))
	}
	_, err := ParseAction("Zero")
	require.ErrorContains(t, err, `invalid staleness action "Zero"`)
}
