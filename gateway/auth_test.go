package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// TestSeparateCredentials checks that push, read and admin endpoints each
// take only their own users, and that health stays open.
func TestSeparateCredentials(t *testing.T) {
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		return string(h)
	}
	st, err := NewStore(StoreOptions{})
	require.NoError(t, err)
	defer st.Close()
	h := NewHandler(st, HandlerOptions{
		EnableAdminAPI: true,
		Auth: Auth{
			Push:   map[string]string{"ci": hash("push-secret")},
			Scrape: map[string]string{"prometheus": hash("scrape-secret")},
			Admin:  map[string]string{"ops": hash("admin-secret")},
		},
	})
	type creds struct{ user, pass string }
	pusher, scraper, admin := &creds{"ci", "push-secret"}, &creds{"prometheus", "scrape-secret"}, &creds{"ops", "admin-secret"}
	scenarios := map[string]struct {
		method, path, body string
		creds              *creds
		wantCode           int
	}{
		"push with push credentials":     {http.MethodPut, "/metrics/job/a", "m 1\n", pusher, http.StatusOK},
		"push again (cached check)":      {http.MethodPost, "/metrics/job/a", "m 2\n", pusher, http.StatusOK},
		"push without credentials":       {http.MethodPut, "/metrics/job/a", "m 1\n", nil, http.StatusUnauthorized},
		"push with scrape credentials":   {http.MethodPut, "/metrics/job/a", "m 1\n", scraper, http.StatusUnauthorized},
		"push with a wrong password":     {http.MethodPut, "/metrics/job/a", "m 1\n", &creds{"ci", "nope"}, http.StatusUnauthorized},
		"delete with push credentials":   {http.MethodDelete, "/metrics/job/b", "", pusher, http.StatusAccepted},
		"scrape with scrape credentials": {http.MethodGet, "/metrics", "", scraper, http.StatusOK},
		"scrape with push credentials":   {http.MethodGet, "/metrics", "", pusher, http.StatusUnauthorized},
		"JSON API needs read access":     {http.MethodGet, "/api/v1/metrics", "", nil, http.StatusUnauthorized},
		"web UI needs read access":       {http.MethodGet, "/", "", scraper, http.StatusOK},
		"wipe with admin credentials":    {http.MethodPut, "/api/v1/admin/wipe", "", admin, http.StatusAccepted},
		"wipe with scrape credentials":   {http.MethodPut, "/api/v1/admin/wipe", "", scraper, http.StatusUnauthorized},
		"pprof needs admin access":       {http.MethodGet, "/debug/pprof/", "", scraper, http.StatusUnauthorized},
		"health is open":                 {http.MethodGet, "/-/healthy", "", nil, http.StatusOK},
		"OPTIONS is open":                {http.MethodOptions, "/metrics/job/a", "", nil, http.StatusOK},
		"another method is 405 for all":  {http.MethodGet, "/metrics/job/a", "", nil, http.StatusMethodNotAllowed},
		"unknown user":                   {http.MethodGet, "/metrics", "", &creds{"mallory", "scrape-secret"}, http.StatusUnauthorized},
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(sc.method, sc.path, strings.NewReader(sc.body))
			if sc.creds != nil {
				req.SetBasicAuth(sc.creds.user, sc.creds.pass)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(t, sc.wantCode, rec.Code, rec.Body.String())
			if sc.wantCode == http.StatusUnauthorized {
				require.Contains(t, rec.Header().Get("WWW-Authenticate"), "Basic realm=")
			}
		})
	}
}
