package stack

import (
	"context"
	"errors"
	"os"
	"testing"
)

// ForTest starts a stack for one test and closes it when the test ends, logging the tail of each
// service's log if the test failed. Like events/pgtest, it skips the test when Postgres is
// unreachable, unless CI is set.
func ForTest(t testing.TB, opts Options) *Stack {
	t.Helper()
	s, err := New(context.Background(), opts)
	if errors.Is(err, ErrNoPostgres) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Log(s.Logs(40))
		}
	})
	return s
}
