package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTrustRoot plays the attack that the broker's permissions close, end to end: someone holding
// blog's (or shop's) NATS identity, or none, tries to publish a key set of their own in the bucket
// and sign an admin token with it, and to publish an event that makes a user an admin for good.
// The broker refuses all of it, and blog and shop go on trusting only what account published.
func TestTrustRoot(t *testing.T) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := login(t, s, adminEmail, adminPassword)
	adminUser := apitest.Call(t, "GET", s.URL["account"]+"/v1/users/me", admin, nil).Want(t, http.StatusOK, "admin's profile")
	bobID, bob := register(t, s, "bob@example.com", "Bob")
	caughtUp(t, s, "bob@example.com")

	ops := operator(t, s)
	published := keySet(t, ctx, ops)
	last := lastSeq(t, ctx, ops)

	attacker := authtest.NewIssuer(t)
	forged := authtest.NewUser(events.RoleAdmin)
	forged.ID = uuid.MustParse(bobID)
	forged.Email = "bob@example.com"
	forged.Version = 9_000_000_000_000_000_000
	e, err := events.NewEvent(events.UserRoleChanged, forged, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	event, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}

	for _, who := range []string{natstest.Blog, natstest.Shop} {
		refused(t, s.NATS.UserURL(who), who, "put a key set in the bucket", func(ctx context.Context, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, events.KeysBucket)
			if err != nil {
				return err
			}
			_, err = kv.Put(ctx, events.KeysKey, attacker.JWKS(t))
			return err
		})
		refused(t, s.NATS.UserURL(who), who, "publish a role change", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, events.Subject(events.UserRoleChanged, forged.ID), event, jetstream.WithMsgID(e.ID.String()))
			return err
		})
	}
	if _, err := nats.Connect(s.NATS.URL, nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("anonymous connect = %v, want an authorization violation", err)
	}

	if got := keySet(t, ctx, ops); got != published {
		t.Errorf("the bucket holds %s, want account's key set %s", got, published)
	}
	if got := lastSeq(t, ctx, ops); got != last {
		t.Errorf("the stream grew from %d to %d events during the attack", last, got)
	}

	// A token for the admin signed with the attacker's key: no service knows the key.
	adminClaims := attacker.Claims(events.User{ID: uuid.MustParse(adminUser.Str("id")), Roles: []string{events.RoleAdmin}, Version: 1})
	token := attacker.Sign(t, adminClaims)
	apitest.Call(t, "POST", s.URL["shop"]+"/v1/products", token, map[string]any{"name": "Loot", "price_cents": 1, "stock": 1}).
		WantProblem(t, http.StatusUnauthorized, "unauthenticated", "shop, a product with the attacker's token")
	apitest.Call(t, "POST", s.URL["blog"]+"/v1/posts", token, map[string]any{"title": "Owned", "body": "x"}).
		WantProblem(t, http.StatusUnauthorized, "unauthenticated", "blog, a post with the attacker's token")
	// Bob is no admin anywhere; the real admin still is.
	apitest.Call(t, "POST", s.URL["shop"]+"/v1/products", bob, map[string]any{"name": "Loot", "price_cents": 1, "stock": 1}).
		WantProblem(t, http.StatusForbidden, "forbidden", "shop, a product by bob")
	apitest.Call(t, "POST", s.URL["shop"]+"/v1/products", admin, map[string]any{"name": "Mug", "price_cents": 1200, "stock": 1}).
		Want(t, http.StatusCreated, "shop, a product by the admin")
}

// TestStartBeforeAccount: blog and shop started before account wait, unready and naming what is
// missing, instead of exiting (they may not create the stream or the bucket), and serve once
// account has created them.
func TestStartBeforeAccount(t *testing.T) {
	s := stack.ForTest(t, stack.Options{BinDir: binDir, AdminEmail: adminEmail, AdminPassword: adminPassword, Stopped: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"blog", "shop"} {
		must(t, s.Launch(name))
	}
	for _, name := range []string{"blog", "shop"} {
		listening(t, s.URL[name])
		r := apitest.Call(t, "GET", s.URL[name]+"/readyz", "", nil)
		r.WantProblem(t, http.StatusServiceUnavailable, "unavailable", name+" /readyz before account")
		if detail := r.Str("detail"); !strings.Contains(detail, "keys") || !strings.Contains(detail, "stream") {
			t.Errorf("%s /readyz detail %q does not name the missing keys and stream", name, detail)
		}
	}
	time.Sleep(time.Second) // long enough for a service that gives up to have exited
	for _, name := range []string{"blog", "shop"} {
		if !s.Running(name) {
			t.Fatalf("%s exited while waiting for account; log:\n%s", name, s.Log(name))
		}
	}
	must(t, s.Start(ctx, "account"))
	for _, name := range []string{"blog", "shop"} {
		must(t, s.WaitReady(ctx, name))
	}
	_, alice := register(t, s, "alice@example.com", "Alice")
	apitest.Call(t, "POST", s.URL["blog"]+"/v1/posts", alice, map[string]any{"title": "Hello", "body": "First."}).
		Want(t, http.StatusCreated, "alice posts")
	apitest.Call(t, "GET", s.URL["shop"]+"/v1/orders", alice, nil).Want(t, http.StatusOK, "alice's orders")
}

// refused runs attempt as the service of that name, and fails the test unless the broker refuses
// it with a permissions violation.
func refused(t *testing.T, url, service, what string, attempt func(context.Context, jetstream.JetStream) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	violation := make(chan error, 1)
	nc, err := nats.Connect(url, nats.MaxReconnects(0), nats.CustomInboxPrefix(bus.InboxPrefix(service)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case violation <- err:
				default:
				}
				cancel() // the refused request gets no reply: stop waiting for one
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := attempt(ctx, js); err == nil {
		t.Errorf("%s may %s", service, what)
		return
	}
	select {
	case err := <-violation:
		t.Logf("%s may not %s: %v", service, what, err)
	case <-time.After(time.Second):
		t.Errorf("%s: %s failed, but the broker reported no permissions violation", service, what)
	}
}

// operator connects to the stack's NATS as ops, until the test ends.
func operator(t *testing.T, s *stack.Stack) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.NATS.UserURL(natstest.Ops), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// listening waits until the server at url answers /healthz.
func listening(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer /healthz within 30s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lastSeq returns the last sequence of the stream.
func lastSeq(t *testing.T, ctx context.Context, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// keySet returns the key set in the bucket.
func keySet(t *testing.T, ctx context.Context, js jetstream.JetStream) string {
	t.Helper()
	kv, err := js.KeyValue(ctx, events.KeysBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, events.KeysKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value())
}
