package gateway_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pushrelay/pushrelay/gateway"
)

func TestParseGrouping(t *testing.T) {
	scenarios := map[string]struct {
		afterJob string
		want     gateway.Grouping
		err      string
	}{
		"job only":                     {afterJob: "/foo", want: gateway.Grouping{"job": "foo"}},
		"job and labels":               {afterJob: "/foo/instance/bar/a/b", want: gateway.Grouping{"job": "foo", "instance": "bar", "a": "b"}},
		"trailing slash after job":     {afterJob: "/foo/", want: gateway.Grouping{"job": "foo"}},
		"plus is literal":              {afterJob: "/foo/a/b+c", want: gateway.Grouping{"job": "foo", "a": "b+c"}},
		"decoded space":                {afterJob: "/foo/a/b c", want: gateway.Grouping{"job": "foo", "a": "b c"}},
		"non-ASCII value":              {afterJob: "/foo/a/Π", want: gateway.Grouping{"job": "foo", "a": "Π"}},
		"job label is overridden":      {afterJob: "/foo/job/bar", want: gateway.Grouping{"job": "foo"}},
		"base64 job label overridden":  {afterJob: "/foo/job@base64/YmFy", want: gateway.Grouping{"job": "foo"}},
		"repeated label, last wins":    {afterJob: "/foo/a/1/a/2", want: gateway.Grouping{"job": "foo", "a": "2"}},
		"escaped-looking name is kept": {afterJob: "/foo/U__a_2e_b/x", want: gateway.Grouping{"job": "foo", "U__a_2e_b": "x"}},
		"underscore name":              {afterJob: "/foo/_a/x", want: gateway.Grouping{"job": "foo", "_a": "x"}},

		"base64 job":                       {afterJob: "@base64/YmF6", want: gateway.Grouping{"job": "baz"}},
		"base64 job with padding":          {afterJob: "@base64/YmE=", want: gateway.Grouping{"job": "ba"}},
		"base64 job without padding":       {afterJob: "@base64/YmE", want: gateway.Grouping{"job": "ba"}},
		"base64 job with extra padding":    {afterJob: "@base64/YmF6==", want: gateway.Grouping{"job": "baz"}},
		"base64 job URL alphabet dash":     {afterJob: "@base64/Pz8-", want: gateway.Grouping{"job": "??>"}},
		"base64 job URL alphabet":          {afterJob: "@base64/Pz8_/a/b", want: gateway.Grouping{"job": "???", "a": "b"}},
		"base64 job with slash in value":   {afterJob: "@base64/L2Zvby9iYXI", want: gateway.Grouping{"job": "/foo/bar"}},
		"base64 label":                     {afterJob: "/foo/a@base64/YmF6", want: gateway.Grouping{"job": "foo", "a": "baz"}},
		"base64 label with padding":        {afterJob: "/foo/a@base64/YmE=", want: gateway.Grouping{"job": "foo", "a": "ba"}},
		"base64 label without padding":     {afterJob: "/foo/a@base64/YmE", want: gateway.Grouping{"job": "foo", "a": "ba"}},
		"base64 label non-ASCII":           {afterJob: "/foo/a@base64/zqA", want: gateway.Grouping{"job": "foo", "a": "Π"}},
		"base64 empty value":               {afterJob: "/foo/a@base64/=", want: gateway.Grouping{"job": "foo", "a": ""}},
		"base64 empty value double pad":    {afterJob: "/foo/a@base64/==", want: gateway.Grouping{"job": "foo", "a": ""}},
		"base64 empty instance":            {afterJob: "/foo/instance@base64/=", want: gateway.Grouping{"job": "foo", "instance": ""}},
		"base64 label URL alphabet":        {afterJob: "/foo/a@base64/Pz8-/b@base64/Pz8_", want: gateway.Grouping{"job": "foo", "a": "??>", "b": "???"}},
		"base64 job and base64 label mix":  {afterJob: "@base64/YmF6/a@base64/YmE/c/d", want: gateway.Grouping{"job": "baz", "a": "ba", "c": "d"}},
		"suffix only on the name is split": {afterJob: "/foo/a/YmF6@base64", want: gateway.Grouping{"job": "foo", "a": "YmF6@base64"}},

		"standard alphabet plus in label": {afterJob: "/foo/a@base64/Pz8+", err: `invalid base64 encoding for label a="Pz8+": illegal base64 data at input byte 3`},
		"garbage in base64 label":         {afterJob: "/foo/b@base64/!!", err: `invalid base64 encoding for label b="!!": illegal base64 data at input byte 0`},
		"standard slash in label value":   {afterJob: "/foo/a@base64/Pz8/", err: `odd number of components in label string "/a@base64/Pz8/"`},
		"standard plus in job":            {afterJob: "@base64/Pz8+", err: `invalid base64 encoding in job name "Pz8+": illegal base64 data at input byte 3`},
		"truncated base64 job":            {afterJob: "@base64/YmF6Y", err: `invalid base64 encoding in job name "YmF6Y": illegal base64 data at input byte 4`},

		"odd components":              {afterJob: "/foo/a/b/c", err: `odd number of components in label string "/a/b/c"`},
		"single component":            {afterJob: "/foo/a", err: `odd number of components in label string "/a"`},
		"trailing slash after a pair": {afterJob: "/foo/a/b/", err: `odd number of components in label string "/a/b/"`},
		"empty component":             {afterJob: "/foo/a//b", err: `odd number of components in label string "/a//b"`},
		"dash in label name":          {afterJob: "/foo/foo-bar/x", err: `improper label name "foo-bar"`},
		"reserved label name":         {afterJob: "/foo/__x/1", err: `improper label name "__x"`},
		"reserved base64 label name":  {afterJob: "/foo/__x@base64/YQ", err: `improper label name "__x"`},
		"digit first in label name":   {afterJob: "/foo/1a/x", err: `improper label name "1a"`},
		"empty base64 label name":     {afterJob: "/foo/@base64/YQ", err: `improper label name ""`},
		"dot in label name":           {afterJob: "/foo/a.b/x", err: `improper label name "a.b"`},
		"empty base64 job":            {afterJob: "@base64/=", err: "job name is required"},
		"empty base64 job no padding": {afterJob: "@base64/", err: "job name is required"},
		"empty job":                   {afterJob: "/", err: "job name is required"},
		"empty base64 job with label": {afterJob: "@base64/==/a/b", err: "job name is required"},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			got, err := gateway.ParseGrouping(s.afterJob)
			if s.err != "" {
				require.EqualError(t, err, s.err)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, s.want, got)
		})
	}
}

func TestGroupingKeyAndString(t *testing.T) {
	scenarios := map[string]struct {
		a, b      gateway.Grouping
		equal     bool
		wantAText string
	}{
		"order does not matter": {
			a: gateway.Grouping{"job": "j", "a": "1", "b": "2"}, b: gateway.Grouping{"b": "2", "job": "j", "a": "1"},
			equal: true, wantAText: `{a="1",b="2",job="j"}`,
		},
		"explicit empty label differs": {
			a: gateway.Grouping{"job": "j", "first": ""}, b: gateway.Grouping{"job": "j"},
			wantAText: `{first="",job="j"}`,
		},
		"instance makes another group": {
			a: gateway.Grouping{"job": "a", "instance": "x"}, b: gateway.Grouping{"job": "a"},
			wantAText: `{instance="x",job="a"}`,
		},
		"values cannot be shifted across names": {
			a: gateway.Grouping{"job": "j", "a": "b\xffc"}, b: gateway.Grouping{"job": "j", "a": "b", "c": ""},
			wantAText: `{a="b\xffc",job="j"}`,
		},
		"quotes are escaped": {
			a: gateway.Grouping{"job": `a"b`}, b: gateway.Grouping{"job": "ab"},
			wantAText: `{job="a\"b"}`,
		},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, s.equal, s.a.Key() == s.b.Key())
			require.Equal(t, s.wantAText, s.a.String())
		})
	}
}

// TestPushURL drives push URLs through the router: decoded paths, %2F,
// redirects, query strings and the status codes of bad URLs. A rejected URL
// creates no group.
func TestPushURL(t *testing.T) {
	scenarios := map[string]struct {
		method   string
		target   string
		code     int
		body     string
		location string
		// labels are the grouping labels of the one group created.
		labels map[string]any
	}{
		"plain":                     {target: "/metrics/job/foo", code: 200, labels: map[string]any{"job": "foo"}},
		"percent-encoded non-ASCII": {target: "/metrics/job/foo/a/%CE%A0", code: 200, labels: map[string]any{"job": "foo", "a": "Π"}},
		"percent-encoded space":     {target: "/metrics/job/foo/a/x%20y", code: 200, labels: map[string]any{"job": "foo", "a": "x y"}},
		"plus stays plus":           {target: "/metrics/job/foo/a/x+y", code: 200, labels: map[string]any{"job": "foo", "a": "x+y"}},
		"query is ignored":          {target: "/metrics/job/foo?a=b", code: 200, labels: map[string]any{"job": "foo"}},
		"trailing slash after job":  {target: "/metrics/job/foo/", code: 200, labels: map[string]any{"job": "foo"}},
		"base64 job":                {target: "/metrics/job@base64/YmF6/instance@base64/=", code: 200, labels: map[string]any{"job": "baz", "instance": ""}},
		"POST works the same":       {method: http.MethodPost, target: "/metrics/job/foo/a/b", code: 200, labels: map[string]any{"job": "foo", "a": "b"}},
		"encoded slash separates":   {target: "/metrics/job/a%2Fb", code: 400, body: `odd number of components in label string "/b"`},
		"improper name":             {target: "/metrics/job/foo/__x/1", code: 400, body: `improper label name "__x"`},
		"empty base64 job":          {target: "/metrics/job@base64/=", code: 400, body: "job name is required"},
		"bad base64 label":          {target: "/metrics/job/foo/a@base64/Pz8+", code: 400, body: `invalid base64 encoding for label a="Pz8+": illegal base64 data at input byte 3`},
		"pair then slash":           {target: "/metrics/job/foo/x/1/", code: 400, body: `odd number of components in label string "/x/1/"`},
		"DELETE checks the URL too": {method: http.MethodDelete, target: "/metrics/job/foo/a", code: 400, body: `odd number of components in label string "/a"`},
		// A value that is not UTF-8 could never be exposed: the
		// Pushgateway stores such a group and fails every later scrape.
		"label value not UTF-8":               {target: "/metrics/job/foo/x/%FF", code: 400, body: `invalid UTF-8 in value of label x: "\xff"`},
		"base64 label value not UTF-8":        {method: http.MethodPost, target: "/metrics/job/foo/path@base64/_-8", code: 400, body: `invalid UTF-8 in value of label path: "\xff\xef"`},
		"job not UTF-8":                       {target: "/metrics/job/%FF%FE", code: 400, body: `invalid UTF-8 in job name "\xff\xfe"`},
		"base64 job not UTF-8":                {target: "/metrics/job@base64/_-8", code: 400, body: `invalid UTF-8 in job name "\xff\xef"`},
		"DELETE of a value that is not UTF-8": {method: http.MethodDelete, target: "/metrics/job/foo/x/%FF", code: 400, body: `invalid UTF-8 in value of label x: "\xff"`},
		"DELETE of unknown group":             {method: http.MethodDelete, target: "/metrics/job/foo", code: 202},
		"no job":                              {target: "/metrics/job", code: 404, body: "404 page not found"},
		"job prefix only":                     {target: "/metrics/jobx/foo", code: 404, body: "404 page not found"},
		"empty job redirects":                 {target: "/metrics/job/", code: 307, location: "/metrics/job"},
		"double slash redirects":              {target: "/metrics/job/foo//a/b", code: 307, location: "/metrics/job/foo/a/b"},
		"GET is not allowed":                  {method: http.MethodGet, target: "/metrics/job/foo", code: 405, body: "Method Not Allowed"},
	}
	for name, s := range scenarios {
		t.Run(name, func(t *testing.T) {
			g := MustNewGateway(t)
			method := s.method
			if method == "" {
				method = http.MethodPut
			}
			rec := g.Do(method, s.target, nil)
			require.Equal(t, s.code, rec.Code, rec.Body.String())
			if s.body != "" {
				require.Equal(t, s.body+"\n", rec.Body.String())
				require.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
			}
			if s.location != "" {
				require.Equal(t, s.location, rec.Header().Get("Location"))
			}
			groups := g.APIMetrics()
			if s.labels == nil {
				require.Empty(t, groups, "a rejected URL must not create a group")
				return
			}
			require.Len(t, groups, 1)
			require.Equal(t, s.labels, groups[0]["labels"])
		})
	}
}
