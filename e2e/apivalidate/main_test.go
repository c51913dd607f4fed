package apivalidate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if running.s != nil {
		if err := running.s.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the system:", err)
			code = 1
		}
		if code != 0 {
			fmt.Fprint(os.Stderr, running.s.Logs(40))
		}
	}
	os.Exit(code)
}

// running is the system the tests that need one share, started by the first of them (live).
var running struct {
	once sync.Once
	s    *stack.Stack
	v    *Validator
	err  error
}

// live returns the running system, starting it on first use, with every request that apitest
// makes in this package held to the documents the services serve. It skips the test when Postgres
// is unreachable, unless CI is set (as stack.ForTest).
func live(t *testing.T) *stack.Stack {
	t.Helper()
	running.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		running.s, running.err = stack.New(ctx, stack.Options{LogLevel: "info"})
		if running.err != nil {
			return
		}
		running.v, running.err = ForServices(ctx, running.s.URL)
		if running.err == nil {
			apitest.SetObserver(running.v.Observe)
		}
	})
	if errors.Is(running.err, stack.ErrNoPostgres) && os.Getenv("CI") == "" {
		t.Skip(running.err)
	}
	if running.err != nil {
		t.Fatal(running.err)
	}
	return running.s
}
