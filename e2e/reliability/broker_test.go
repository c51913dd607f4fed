package reliability

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/rig"
)

// F01k: the broker is SIGKILLed under load and restarted on its store, three times. Account keeps
// answering (the outbox holds what the broker cannot take), and once it is back every change
// reaches the stream once and both replicas.
func TestBrokerKilled(t *testing.T) {
	row := newRow(t, "F01k", "broker SIGKILLed and restarted under load",
		"registrations, role and status changes from 8 clients, orders and posts from 4 customers; the single nats-server SIGKILLed, restarted 2 s later on its store, 3 times",
		"account answers throughout; lost 0, applied-twice 0, divergence 0; no 500")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, 20, 4) // users to change
	product := w.NewProduct(ctx, "F01k", 100, 1_000_000)
	shopping := w.Traffic(ctx, w.Customers(ctx, 4, 4), product, []string{"blog", "shop"}, 4)
	stop := w.Background(ctx, 8)
	nd := sys.Broker.Nodes[0]
	kills := size(1, 3)
	for range kills {
		time.Sleep(time.Duration(size(1, 3)) * time.Second)
		nd.Kill()
		time.Sleep(2 * time.Second)
		if err := nd.Start(ctx); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	stop()
	requests := shopping()
	end := time.Now()
	row.Add("kills", kills)
	row.Add("orders and posts", requests)
	sys.Judge(w, row, end, time.Minute)
}

// F01: the broker is down for a minute while 1,000 changes happen. Account takes every one (the
// outbox holds them), blog and shop keep serving, and once the broker is back the backlog drains
// to the stream and both replicas.
func TestBrokerDown(t *testing.T) {
	down := time.Duration(size(3, 60)) * time.Second
	changes := size(150, 1000)
	row := newRow(t, "F01", "broker down while changes happen",
		fmt.Sprintf("the single nats-server SIGKILLed for %s while %d registrations, role and status changes are made from 8 clients; orders, posts and reads of blog and shop meanwhile", down, changes),
		"every change answered by account; blog and shop keep answering; after the restart the outbox drains; lost 0, divergence 0; no 500")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, 20, 4)
	product := w.NewProduct(ctx, "F01", 100, 1_000_000)
	customers := w.Customers(ctx, 4, 4)
	nd := sys.Broker.Nodes[0]

	nd.Kill()
	outage := time.Now()
	stopReads := reads(ctx, t, w)
	placedBefore := created(w, "shop")
	shopping := w.Traffic(ctx, customers, product, []string{"blog", "shop"}, 4)
	w.Changes(ctx, changes, 8)
	answered := time.Since(outage)
	pending := outboxPending(t, sys)
	if rest := down - time.Since(outage); rest > 0 {
		time.Sleep(rest)
	}
	reads := stopReads()
	shopping()
	placed := created(w, "shop") - placedBefore
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if err := rig.Within(2*time.Minute, func() bool { return outboxPending(t, sys) == 0 }); err != nil {
		t.Errorf("outbox not drained within 2 minutes of the broker's return: %d pending", outboxPending(t, sys))
	}
	drain := time.Since(back)
	row.Add("down", down)
	row.Add("changes during the outage", changes)
	row.Add("answered in", answered)
	row.Add("outbox backlog peak", pending)
	row.Add("drain after return", drain)
	row.Add("reads during the outage (200)", reads)
	row.Add("orders placed during the outage", placed)
	if placed == 0 {
		t.Error("no order placed while the broker was down")
	}
	if pending < int64(changes)/2 {
		t.Errorf("outbox backlog %d with the broker down during %d changes: the outage did not hold them", pending, changes)
	}
	sys.Judge(w, row, back, time.Minute)
}

// reads sends public reads to blog and shop from 2 clients until stopped, and returns how many
// were answered 200; any other answer fails the test.
func reads(ctx context.Context, t *testing.T, w *rig.Workload) (stop func() int) {
	var ok atomic.Int64
	var stopped atomic.Bool
	var mu sync.Mutex
	other := map[string]map[int]int{}
	var wg sync.WaitGroup
	for _, path := range []struct{ service, path string }{{"blog", "/v1/posts"}, {"shop", "/v1/products"}} {
		wg.Go(func() {
			for !stopped.Load() {
				if status := w.Call(ctx, path.service, http.MethodGet, path.path, "", nil); status == http.StatusOK {
					ok.Add(1)
				} else {
					mu.Lock()
					if other[path.service] == nil {
						other[path.service] = map[int]int{}
					}
					other[path.service][status]++
					mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return func() int {
		stopped.Store(true)
		wg.Wait()
		for s, byStatus := range other {
			t.Errorf("%s reads during the outage answered other than 200: %v (0: no answer)", s, byStatus)
		}
		return int(ok.Load())
	}
}

// created counts the 201 answers of service so far.
func created(w *rig.Workload, service string) int {
	byStatus, _ := w.Answers(service)
	return byStatus[http.StatusCreated]
}

// outboxPending counts account's events not yet published.
func outboxPending(t *testing.T, sys *rig.System) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int64
	if err := sys.Pool("account").QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
