package pgserver

import (
	"context"
	"errors"
	"os"
	"testing"
)

// ForTest starts a server for one test and closes it when the test ends, logging the tail of the
// server's log if the test failed. Like events/pgtest, it skips the test when Postgres is not
// installed, unless CI is set: under CI that fails the test, so that a green run always means the
// tests ran.
func ForTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(context.Background())
	if errors.Is(err, ErrNoPostgres) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", s.Log(40))
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}
