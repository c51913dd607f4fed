package auth_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/servicetest"
	"github.com/nats-io/nats.go/jetstream"
)

// watched starts a private NATS server, a KeySet watching its key bucket as blog does (reading it
// directly every resync when positive), and returns them with the bucket as account writes it. The
// watch is stopped at cleanup, and must then return nil.
func watched(t *testing.T, resync time.Duration) (*natstest.Server, jetstream.KeyValue, *auth.KeySet) {
	t.Helper()
	srv := natstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := bus.EnsureKeyBucket(ctx, srv.JetStream(t, natstest.Account))
	if err != nil {
		t.Fatal(err)
	}
	return srv, kv, watch(t, srv, resync)
}

// watch starts a KeySet watching the bucket of srv as blog does, stopped at cleanup.
func watch(t *testing.T, srv *natstest.Server, resync time.Duration) *auth.KeySet {
	t.Helper()
	keys, err := auth.NewKeySet(nil)
	if err != nil {
		t.Fatal(err)
	}
	w := auth.NewKeyWatch(keys, srv.JetStream(t, natstest.Blog), slog.New(slog.NewTextHandler(t.Output(), nil)))
	if resync > 0 {
		auth.SetResync(w, resync)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
	})
	return keys
}

// TestWatchWaitsForBucket: a watch started before account has created the bucket waits for it,
// then loads the first keys published.
func TestWatchWaitsForBucket(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t)
	keys := watch(t, srv, 0)
	time.Sleep(300 * time.Millisecond) // the watch has looked for the bucket and not found it
	if keys.Len() != 0 {
		t.Fatalf("Len() = %d before any key is published, want 0", keys.Len())
	}
	a := authtest.NewIssuer(t)
	a.PublishKeys(t, srv.JetStream(t, natstest.Account))
	servicetest.Eventually(t, 20*time.Second, "key loaded once the bucket exists", has(keys, a))
}

// put writes doc as the JWKS, retrying while the server is coming back.
func put(t *testing.T, kv jetstream.KeyValue, doc []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := kv.Put(ctx, events.KeysKey, doc)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("put jwks: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually waits for cond, failing the test if it does not hold within 30 s (a bound for an
// asynchronous update, far above the time it takes, not a measure of speed).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	servicetest.Eventually(t, 30*time.Second, what, cond)
}

func has(k *auth.KeySet, iss *authtest.Issuer) func() bool {
	return func() bool { _, ok := k.Key(iss.JWK.Kid); return ok }
}

func TestWatch(t *testing.T) {
	t.Parallel()
	_, kv, keys := watched(t, 0)
	a, b := authtest.NewIssuer(t), authtest.NewIssuer(t)

	put(t, kv, a.JWKS(t))
	eventually(t, "first key loaded", has(keys, a))

	put(t, kv, b.JWKS(t))
	eventually(t, "rotated key loaded", has(keys, b))
	if _, ok := keys.Key(a.JWK.Kid); ok {
		t.Error("old key still in the set after an update without it")
	}

	// A document that cannot be parsed is ignored; the next good one is applied, in order.
	put(t, kv, []byte("garbage"))
	put(t, kv, a.JWKS(t))
	eventually(t, "key after garbage loaded", has(keys, a))

	// A delete revokes every key.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := kv.Delete(ctx, events.KeysKey); err != nil {
		t.Fatal(err)
	}
	eventually(t, "set emptied by delete", func() bool { return keys.Len() == 0 })

	put(t, kv, b.JWKS(t))
	eventually(t, "key after delete loaded", has(keys, b))
}

// TestWatchLoadsExisting: keys published before the watch starts are loaded at once.
func TestWatchLoadsExisting(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t)
	a := authtest.NewIssuer(t)
	a.PublishKeys(t, srv.JetStream(t, natstest.Account))
	keys := &auth.KeySet{}
	w := auth.NewKeyWatch(keys, srv.JetStream(t, natstest.Blog), nil)
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	eventually(t, "existing key loaded", has(keys, a))
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// TestWatchSurvivesRestart: after NATS goes down and comes back, a key put after the restart is
// picked up by the watch. The watch's ordered consumer notices its consumer is gone after two
// missed idle heartbeats (5 s each) and recreates it, so this takes 10 to 20 s; the bound of 45 s
// stays below the one-minute direct read of Watch, so the direct read cannot be what passes the test.
func TestWatchSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv, kv, keys := watched(t, 0)
	a, b := authtest.NewIssuer(t), authtest.NewIssuer(t)
	put(t, kv, a.JWKS(t))
	eventually(t, "key loaded", has(keys, a))

	srv.Stop()
	time.Sleep(200 * time.Millisecond) // let the client notice the outage
	if !has(keys, a)() {
		t.Error("keys lost during the outage")
	}
	srv.Start()

	put(t, kv, b.JWKS(t))
	servicetest.Eventually(t, 45*time.Second, "key put after the restart loaded", has(keys, b))
}

// TestWatchBucketRecreated: when the bucket is deleted and created again, its revisions start
// over; the direct reads pick up the new keys even though the watch resumes at the old revision.
func TestWatchBucketRecreated(t *testing.T) {
	t.Parallel()
	srv, kv, keys := watched(t, 100*time.Millisecond)
	a, b := authtest.NewIssuer(t), authtest.NewIssuer(t)
	for range 3 { // a few revisions, so the new bucket's revisions are lower
		put(t, kv, a.JWKS(t))
	}
	eventually(t, "key loaded", has(keys, a))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.JetStream(t, natstest.Ops).DeleteKeyValue(ctx, events.KeysBucket); err != nil {
		t.Fatal(err)
	}
	b.PublishKeys(t, srv.JetStream(t, natstest.Account)) // creates the bucket again
	eventually(t, "key of the new bucket loaded", has(keys, b))
	if keys.Len() != 1 {
		t.Errorf("Len() = %d after the new bucket's document, want 1", keys.Len())
	}
}
