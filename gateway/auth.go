package gateway

import (
	"crypto/sha256"
	"net/http"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Access classes of the HTTP API, each with its own credentials.
const (
	classPush   = "push"
	classScrape = "scrape"
	classAdmin  = "admin"
)

// Auth holds separate basic-auth users, name to bcrypt hash, for pushing
// (PUT/POST/DELETE of groups), reading (exposition, JSON API, web UI) and
// administration (wipe, quit, reload, deleting from the UI). A class
// without users is open. Health endpoints are always open.
type Auth struct {
	Push, Scrape, Admin map[string]string
}

// authCacheSize bounds the remembered successful logins.
const authCacheSize = 1024

// authenticator checks credentials, remembering successful checks so that
// bcrypt runs once per user and password.
type authenticator struct {
	users map[string]map[string]string

	mu    sync.Mutex
	valid map[[sha256.Size]byte]bool
}

func newAuthenticator(a Auth) *authenticator {
	users := map[string]map[string]string{}
	for class, u := range map[string]map[string]string{classPush: a.Push, classScrape: a.Scrape, classAdmin: a.Admin} {
		if len(u) > 0 {
			users[class] = u
		}
	}
	if len(users) == 0 {
		return nil
	}
	return &authenticator{users: users, valid: map[[sha256.Size]byte]bool{}}
}

// allowed reports whether the request may use an endpoint of class.
func (a *authenticator) allowed(class string, r *http.Request) bool {
	users := a.users[class]
	if users == nil {
		return true
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	hash, known := users[user]
	if !known {
		// Spend the same time as for a known user.
		_ = bcrypt.CompareHashAndPassword([]byte("$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"), []byte(pass))
		return false
	}
	key := sha256.Sum256([]byte(class + "\x00" + user + "\x00" + hash + "\x00" + pass))
	a.mu.Lock()
	cached := a.valid[key]
	a.mu.Unlock()
	if cached {
		return true
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass)) != nil {
		return false
	}
	a.mu.Lock()
	if len(a.valid) >= authCacheSize {
		clear(a.valid)
	}
	a.valid[key] = true
	a.mu.Unlock()
	return true
}

// require wraps h so that it answers 401 unless the request carries
// credentials of class.
func (a *authenticator) require(class string, h http.Handler) http.Handler {
	if a == nil || a.users[class] == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.allowed(class, r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="pushrelay `+class+`", charset="UTF-8"`)
			http.Error(w, "Unauthorized: this endpoint needs "+class+" credentials", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
