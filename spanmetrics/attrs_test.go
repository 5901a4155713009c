package spanmetrics

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestSpanAttrsScan(t *testing.T) {
	long := strings.Repeat("k", 70)
	var x keyIndex
	keys := x.addAll([]string{"a", "b.c", long, "a", ""})
	require.Equal(t, []int{0, 1, 2, 0, 3}, keys, "a key added twice keeps its number")
	scenarios := map[string]struct {
		fill func(m pcommon.Map)
		want map[int]string
	}{
		"none":                   {fill: func(m pcommon.Map) { m.PutStr("x", "1") }, want: map[int]string{}},
		"typed":                  {fill: func(m pcommon.Map) { m.PutInt("a", 7); m.PutBool("b.c", true) }, want: map[int]string{0: "7", 1: "true"}},
		"long":                   {fill: func(m pcommon.Map) { m.PutStr(long, "v"); m.PutStr(strings.Repeat("k", 64), "w") }, want: map[int]string{2: "v"}},
		"same length, other key": {fill: func(m pcommon.Map) { m.PutStr("b.d", "v"); m.PutStr("c.c", "w") }, want: map[int]string{}},
		"empty key":              {fill: func(m pcommon.Map) { m.PutStr("", "e") }, want: map[int]string{3: "e"}},
		"first of duplicates": {fill: func(m pcommon.Map) {
			// Only decoded data can repeat a key.
			var u ptrace.JSONUnmarshaler
			td, err := u.UnmarshalTraces([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[` +
				`{"key":"a","value":{"stringValue":"first"}},{"key":"a","value":{"stringValue":"second"}}]}]}]}]}`))
			require.NoError(t, err)
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().MoveTo(m)
			require.Equal(t, 2, m.Len())
		}, want: map[int]string{0: "first"}},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			m := pcommon.NewMap()
			sc.fill(m)
			a := newSpanAttrs(&x)
			a.scan(m, true)
			for i := range x.keys {
				got, ok := a.get(i)
				want, wantOK := sc.want[i]
				require.Equal(t, wantOK, ok, "key %d", i)
				require.Equal(t, want, got, "key %d", i)
			}
			require.Equal(t, attributesSize(m), a.size)
		})
	}
}

func TestCloneValues(t *testing.T) {
	scenarios := map[string][]string{
		"none":        {},
		"empty value": {"svc", "", "SPAN_KIND_SERVER"},
		"all empty":   {"", ""},
	}
	for name, v := range scenarios {
		t.Run(name, func(t *testing.T) {
			in := append([]string(nil), v...)
			got := cloneValues(in)
			require.Equal(t, v, got)
			_ = append(in[:0], make([]string, len(v))...)
			require.Equal(t, v, got, "the clone does not share the input slice")
		})
	}
}
