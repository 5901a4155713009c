package gateway

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/persistence"
)

// TestRecordIntoReuse stores groups of different shapes through one reused
// persistence.Group, as commit does, and expects the bytes a fresh record
// encodes to; once released, the record refers to no series.
func TestRecordIntoReuse(t *testing.T) {
	s, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	bodies := map[string]string{
		"three families": "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"2\"} 2\nb 3\n# TYPE c histogram\nc_bucket{le=\"1\"} 1\nc_bucket{le=\"+Inf\"} 2\nc_sum 3\nc_count 2\n",
		"one family":     "b 4\n",
		"many series":    manySeries(50),
	}
	order := []string{"three families", "one family", "many series", "one family", "three families"}
	for i, name := range order {
		grouping := Grouping{"job": fmt.Sprintf("j%d", i), "shape": name}
		tb, ok := s.prepareText(grouping.Key(), []byte(bodies[name]))
		require.True(t, ok, name)
		require.NoError(t, s.submitText(grouping, tb, true, true, nil), name)
	}

	var reused persistence.Group
	for _, g := range s.groups {
		var fresh persistence.Group
		g.recordInto(&fresh)
		g.recordInto(&reused)
		want := persistence.EncodeGroup(nil, &fresh)
		require.True(t, bytes.Equal(want, persistence.EncodeGroup(nil, &reused)), "group %s", g.key)
		releaseRecord(&reused)
		require.Empty(t, reused.Labels)
		require.Empty(t, reused.Families)
		for _, f := range reused.Families[:cap(reused.Families)] {
			require.Zero(t, f.Name)
			for _, m := range f.Metrics[:cap(f.Metrics)] {
				require.Nil(t, m, "a released record keeps no series alive")
			}
		}
	}
}

func manySeries(n int) string {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "m{i=\"%d\"} %d\n", i, i)
	}
	return b.String()
}
