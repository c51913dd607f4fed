package replica_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/events/replica"
)

// BenchmarkRebuild publishes REPLICA_BENCH_EVENTS events (default 20,000: a created and a role
// change per user) to an embedded NATS server, then times full rebuilds of a replica in a fresh
// database, reporting events/s; with REPLICA_BENCH_VERIFY set it also times a verify. For the
// figure of the runbook:
//
//	REPLICA_BENCH_EVENTS=1000000 go test ./events/replica -run '^$' -bench Rebuild -benchtime 1x
func BenchmarkRebuild(b *testing.B) {
	n := 20_000
	if s := os.Getenv("REPLICA_BENCH_EVENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 2 {
			b.Fatalf("REPLICA_BENCH_EVENTS=%q: want a number of at least 2", s)
		}
		n = v
	}
	pool := pgtest.NewPool(b)
	ctx := context.Background()
	if err := replica.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	srv := natstest.New(b)
	pub := srv.JetStream(b, natstest.Account, jetstream.WithPublishAsyncMaxPending(4096))
	js := srv.JetStream(b, natstest.Blog) // the operator command runs as the service
	if _, err := bus.EnsureStream(ctx, pub); err != nil {
		b.Fatal(err)
	}

	start := time.Now()
	for i := 0; i < n; i += 2 {
		u := authtest.NewUser()
		for v := int64(1); v <= 2 && i+int(v) <= n; v++ {
			u.Version = v
			if v == 2 {
				u.Roles = []string{events.RoleUser, events.RoleModerator}
			}
			e, err := events.NewEvent(events.UserRoleChanged, u, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			data, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := pub.PublishAsync(e.Subject(), data); err != nil {
				b.Fatal(err)
			}
			if (i+int(v))%2048 == 0 {
				waitPublished(b, pub) // bounded pending acks: no stall
			}
		}
	}
	waitPublished(b, pub)
	b.Logf("published %d events in %s", n, time.Since(start).Round(time.Millisecond))

	b.ResetTimer()
	var total time.Duration
	for range b.N {
		res, err := replica.Rebuild(ctx, pool, js, replica.RebuildOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Read != uint64(n) {
			b.Fatalf("read %d events, want %d", res.Read, n)
		}
		total += res.Elapsed
		b.Logf("rebuild of %d events: %s, %.0f events/s", n, res.Elapsed.Round(time.Millisecond), float64(n)/res.Elapsed.Seconds())
	}
	b.StopTimer()
	if os.Getenv("REPLICA_BENCH_VERIFY") != "" {
		vstart := time.Now()
		res, err := replica.Verify(ctx, pool, js, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("verify of %d events: %s, %d differences", n, time.Since(vstart).Round(time.Millisecond), len(res.Differences))
	}
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "events/s")
}

func waitPublished(b *testing.B, js jetstream.JetStream) {
	b.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish did not complete")
	}
}
