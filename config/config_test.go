package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(`
staleness:
  rules:
    - match: {job: "wm_.*"}
      ttl: 90s
      action: delete
    - match: {job: backup}
      ttl: 0
`))
	require.NoError(t, err)
	require.Len(t, c.Staleness.Rules, 2)
	r := c.Staleness.Rules[0]
	require.Equal(t, 90*time.Second, r.TTL)
	require.Equal(t, "delete", string(r.Action))
	require.Equal(t, 4, r.Line)
	require.True(t, r.Match["job"].MatchString("wm_import"))
	require.False(t, r.Match["job"].MatchString("x_wm_import"), "matchers are anchored")
	require.Equal(t, time.Duration(0), c.Staleness.Rules[1].TTL)
	require.Empty(t, string(c.Staleness.Rules[1].Action))
}

func TestParseEmpty(t *testing.T) {
	c, err := Parse(nil)
	require.NoError(t, err)
	require.Empty(t, c.Staleness.Rules)
}

func TestParseBad(t *testing.T) {
	scenarios := map[string]struct {
		in      string
		wantErr string
	}{
		"unknown top-level field": {"stalenes: {}\n", "line 1: field stalenes not found"},
		"bad regexp":              {"staleness:\n  rules:\n    - match: {job: \"(\"}\n      ttl: 1m\n", "line 3: invalid regular expression for label \"job\""},
		"bad ttl":                 {"staleness:\n  rules:\n    - match: {job: a}\n      ttl: soon\n", "line 4: invalid ttl \"soon\""},
		"negative ttl":            {"staleness:\n  rules:\n    - match: {job: a}\n      ttl: -1m\n", "line 4: invalid ttl \"-1m\": must not be negative"},
		"bad action":              {"staleness:\n  rules:\n    - match: {job: a}\n      ttl: 1m\n      action: drop\n", "line 5: invalid staleness action \"drop\""},
		"no ttl":                  {"staleness:\n  rules:\n    - match: {job: a}\n", "line 3: staleness rule has no ttl"},
		"unknown rule field":      {"staleness:\n  rules:\n    - match: {job: a}\n      ttl: 1m\n      after: 2m\n", "line 5: unknown field \"after\""},
		"rule not a mapping":      {"staleness:\n  rules:\n    - 5m\n", "line 3: a staleness rule must be a mapping"},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(sc.in))
			require.ErrorContains(t, err, sc.wantErr)
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pushrelay.yml")
	require.NoError(t, os.WriteFile(path, []byte("staleness: {rules: [{match: {job: a}, ttl: x}]}\n"), 0o600))
	_, err := Load(path)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "line 1")
	_, err = Load(filepath.Join(t.TempDir(), "missing.yml"))
	require.ErrorContains(t, err, "missing.yml")
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("staleness:\n  rules:\n    - match: {job: \"wm_.*\"}\n      ttl: 90s\n      action: zero\n"))
	f.Add([]byte(""))
	f.Add([]byte("staleness: {rules: [{match: {a: b}, ttl: 0}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<14 {
			return
		}
		c, err := Parse(b)
		if err == nil {
			require.NotNil(t, c)
		}
	})
}

func TestParseAuth(t *testing.T) {
	c, err := Parse([]byte("auth:\n  push:\n    basic_auth_users:\n      ci: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n"))
	require.NoError(t, err)
	require.Contains(t, c.Auth.Push.BasicAuthUsers, "ci")
	_, err = Parse([]byte("auth:\n  scrape:\n    basic_auth_users:\n      prometheus: plaintext\n"))
	require.ErrorContains(t, err, `auth.scrape user "prometheus": the password must be a bcrypt hash`)
}
