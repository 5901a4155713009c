package gateway

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// textParseSeeds are bodies the fast parser must agree on with expfmt,
// accepted or not.
var textParseSeeds = []string{
	"",
	"\n",
	"m 1\n",
	"m{a=\"b\"} 1\n",
	"# HELP m help with \\\\ and \\n and \\\"\n# TYPE m counter\nm{a=\"b\",c=\"d\"} 1.5\nm{a=\"x\"} -2\n",
	"# TYPE g gauge\ng NaN\ng{x=\"1\"} +Inf\ng{x=\"2\"} -Inf\n",
	"# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n",
	"# TYPE h histogram\nh_bucket{a=\"1\",le=\"0.1\"} 1\nh_bucket{le=\"0.1\",a=\"2\"} 1.5\nh_sum{a=\"1\"} 3\nh_count{a=\"1\"} 2\nh_count{a=\"2\"} 2.5\n",
	"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 2\ns_sum 3\ns_count 4\n",
	"# TYPE s summary\ns_count 4\ns_sum{x=\"y\"} 1\n",
	"# EOF\n# some comment\n#\nm 1\n",
	"m 1 1700000000000\n",
	"m 1\r\n",
	"m 1",
	"# TYPE m counter\n# TYPE m gauge\nm 1\n",
	"m 1\n# TYPE m counter\n",
	"# HELP m a\n# HELP m b\nm 1\n",
	"m{a=\"b\",a=\"c\"} 1\n",
	"m{__name__=\"x\"} 1\n",
	"m{a=\"\\x\"} 1\n",
	"m{a=\"b\",} 1\n",
	"m {a=\"b\"} 1\n",
	"m{a=\"b\"}  1\n",
	"m{} 1\n",
	"{a=\"b\"} 1\n",
	"m 1_0\n",
	"m 0x1p3\n",
	"# TYPE x_total counter\nx_total 1\n",
	"# TYPE m COUNTER\nm 1\n",
	"# TYPE gh gaugehistogram\ngh_bucket{le=\"1\"} 1\n",
	"# HELP  m x\nm 1\n",
	"#HELP m x\nm 1\n",
	"# HELP m\nm 1\n",
	"# HELP m \nm 1\n",
	"m{a=\"\xff\"} 1\n",
	"# TYPE h histogram\nh{le=\"1\"} 1\n",
	"# TYPE h histogram\nh_bucket 1\n",
	"# TYPE h histogram\nh_bucket{le=\"1\"} -1\n",
	"# TYPE s summary\ns 1\n",
	"# TYPE h histogram\n# TYPE h_bucket counter\n",
	"a:b:c 1\n",
	"m{a=\"b\\\"c\"} 2\n",
	"# TYPE h histogram\nh_bucket{le=\"1\"} 1\n# TYPE h_bucket counter\nh_bucket 2\n",
	"# TYPE s summary\ns_count 1\ns_count 2\n",
	"m 1e400\n",
}

func TestParseTextFastMatchesExpfmt(t *testing.T) {
	for _, in := range textParseSeeds {
		t.Run(in, func(t *testing.T) { requireSameAsExpfmt(t, []byte(in)) })
	}
}

func TestParseTextFastAcceptsCommonBodies(t *testing.T) {
	for _, in := range []string{
		textParseSeeds[4], textParseSeeds[6], textParseSeeds[7], textParseSeeds[8],
	} {
		_, ok := parseTextFast([]byte(in))
		require.True(t, ok, "fast parser should accept %q", in)
	}
}

// requireSameAsExpfmt fails if the fast parser accepts in but differs from
// expfmt in any way.
func requireSameAsExpfmt(t *testing.T, in []byte) {
	t.Helper()
	fast, ok := parseTextFast(in)
	if !ok {
		return
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	want, err := parser.TextToMetricFamilies(bytes.NewReader(in))
	require.NoError(t, err, "fast parser accepted what expfmt rejects: %q", in)
	require.Len(t, fast, len(want))
	for name, mf := range want {
		require.Contains(t, fast, name)
		got := fast[name].toDto()
		require.True(t, proto.Equal(mf, got), "family %s differs for %q:\nexpfmt %v\nfast   %v", name, in, mf, got)
	}
}

func FuzzParseTextFast(f *testing.F) {
	for _, s := range textParseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<16 {
			return
		}
		requireSameAsExpfmt(t, in)
	})
}

// parseSampleFloatSeeds are values parseWholeNumber takes or must leave to
// strconv.ParseFloat.
var parseSampleFloatSeeds = []string{
	"0", "-0", "+0", "42", "-7", "+7", "1.0", "-1.000", "1.", "007", "1e3", "1E3", "0x1p3", "1_0", "", "-", "+",
	".5", "5.01", "5.0a", "NaN", "+Inf", "-Inf", "999999999999999", "9999999999999999", "-999999999999999.0",
	"0000000000000001", "12 ", " 12",
}

// FuzzParseSampleFloat checks that parseSampleFloat gives the value and
// the error-ness of the expfmt rule, strconv.ParseFloat without hex floats
// and underscores, whatever path it takes.
func FuzzParseSampleFloat(f *testing.F) {
	for _, s := range parseSampleFloatSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, wantErr := strconv.ParseFloat(s, 64)
		if strings.ContainsAny(s, "pP_") {
			wantErr = strconv.ErrSyntax
		}
		got, err := parseSampleFloat(s)
		require.Equal(t, wantErr != nil, err != nil, "error for %q: %v", s, err)
		if err == nil && !(math.IsNaN(want) && math.IsNaN(got)) {
			require.Equal(t, math.Float64bits(want), math.Float64bits(got), "value of %q", s)
		}
	})
}
