package httpload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/bench/load"
	"github.com/authmesh/e2e/stack"
)

// system is the running stack, and the user whose requests the load sends.
type system struct {
	stack *stack.Stack
	pid   map[string]int
	// idle is each service's memory once started, before any request.
	idle map[string]load.Memory

	userID, email, token string
	// registered counts the users the registration load made, registeredEmail(1) and on, all with
	// apitest.Password.
	registered atomic.Int64
}

// registeredEmail is the email of the nth user the registration load made.
func registeredEmail(n int64) string { return fmt.Sprintf("registered-%d@example.com", n) }

// settle is how long the services are left alone before their idle memory is read.
const settle = 2 * time.Second

// startSystem builds the bench binaries, starts the stack, reads the idle memory, then registers
// the load's user and waits until blog and shop have it. The stack is closed when b ends.
func startSystem(b *testing.B) *system {
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	bin := b.TempDir()
	if err := stack.Build(ctx, bin, "bench"); err != nil {
		b.Fatal(err)
	}
	// warn: an access line per request (info) would be held in memory for the whole run, hundreds
	// of megabytes at these rates; every variant is measured without it alike.
	s, err := stack.New(ctx, stack.Options{BinDir: bin, LogLevel: "warn", Stopped: true})
	if errors.Is(err, stack.ErrNoPostgres) && os.Getenv("CI") == "" {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
		if b.Failed() {
			b.Log(s.Logs(40))
		}
	})
	// The synchronous design's routes ask account; blog and shop learn where it is. account takes
	// the client address of a login from X-Forwarded-For, as behind a proxy, so that a storm of
	// logins comes from many clients, as a real one would, rather than from one throttled address.
	for _, name := range []string{"blog", "shop"} {
		s.Env[name] = append(s.Env[name], "BENCH_ACCOUNT_URL="+s.URL["account"])
	}
	s.Env["account"] = append(s.Env["account"], "TRUSTED_PROXIES=127.0.0.1/32")
	sys := &system{stack: s, pid: map[string]int{}, idle: map[string]load.Memory{}}
	for _, name := range stack.Services {
		if err := s.Start(ctx, name); err != nil {
			b.Fatal(err)
		}
		sys.pid[name] = s.PID(name)
	}
	time.Sleep(settle)
	for name, pid := range sys.pid {
		m, err := load.ReadMemory(pid)
		if err != nil {
			b.Fatal(err)
		}
		sys.idle[name] = m
	}

	sys.email = "load@example.com"
	sys.userID, sys.token = apitest.Register(b, s.URL["account"], sys.email, "Load")
	// The baselines' fixed user is the load's user, as the replica has it.
	for _, name := range []string{"blog", "shop"} {
		apitest.Eventually(b, http.StatusNoContent, name+" has the load's user", func() apitest.Response {
			return apitest.Call(b, "PUT", s.URL[name]+"/bench/user/"+sys.userID, "", nil)
		})
	}
	// A product, so that the anonymous reference lists one.
	admin := apitest.Login(b, s.URL["account"], s.AdminEmail, s.AdminPassword)
	apitest.Eventually(b, http.StatusCreated, "create a product", func() apitest.Response {
		return apitest.Call(b, "POST", s.URL["shop"]+"/v1/products", admin,
			map[string]any{"name": "Load", "price_cents": 100, "stock": 10})
	})
	time.Sleep(settle) // past account's release of the setup's hashes' memory, before any load
	return sys
}

// url is the URL of path on service.
func (s *system) url(service, path string) string { return s.stack.URL[service] + path }

// databaseURL is a service's DATABASE_URL.
func (s *system) databaseURL(service string) string {
	for _, kv := range s.stack.Env[service] {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			return v
		}
	}
	return ""
}
