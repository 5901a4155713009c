package persistence

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheckLength runs checkLength on arbitrary file contents: it never
// panics, and the only error it returns for a readable file is that the
// file is truncated. Seeds are the start of a real file, whole and cut.
func FuzzCheckLength(f *testing.F) {
	src := filepath.Join(f.TempDir(), "seed.db")
	db, err := Open(src, nil)
	if err != nil {
		f.Fatal(err)
	}
	if err := db.Close(); err != nil {
		f.Fatal(err)
	}
	whole, err := os.ReadFile(src)
	if err != nil {
		f.Fatal(err)
	}
	page := os.Getpagesize()
	f.Add(whole)
	f.Add(whole[:2*page])
	f.Add(whole[:page+100])
	f.Add(whole[:100])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "f.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		file, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		if err := checkLength(file, int64(len(b))); err != nil && !strings.HasPrefix(err.Error(), "file is truncated: ") {
			t.Fatalf("unexpected error: %v", err)
		}
	})
}
