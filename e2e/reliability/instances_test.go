package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/e2e/reliability/rig"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// smokeAckWait is the ack wait of the replicas' consumers at smoke scale. An event delivered to
// an instance that is SIGKILLed before it acks is redelivered only when its ack wait has passed
// (bus.AckWait, 30 s): the full scale waits for that, the smoke scale shortens it, as an operator
// may, to keep `make test` fast.
const smokeAckWait = 3 * time.Second

// ackWait returns the consumers' ack wait at this scale, shortening it at smoke scale.
func ackWait(t *testing.T, sys *rig.System) time.Duration {
	t.Helper()
	if full() {
		cons, err := consumer(sys, rig.Replicas[0])
		if err != nil {
			t.Fatal(err)
		}
		return cons.CachedInfo().Config.AckWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := sys.JS()
	if err != nil {
		t.Fatal(err)
	}
	for _, durable := range rig.Replicas {
		cons, err := consumer(sys, durable)
		if err != nil {
			t.Fatal(err)
		}
		cfg := cons.CachedInfo().Config
		cfg.AckWait = smokeAckWait
		if _, err := js.UpdateConsumer(ctx, events.StreamName, cfg); err != nil {
			t.Fatalf("shorten the ack wait of %s: %v", durable, err)
		}
	}
	return smokeAckWait
}

// consumer looks up a replica's durable consumer.
func consumer(sys *rig.System, durable string) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := sys.JS()
	if err != nil {
		return nil, err
	}
	return js.Consumer(ctx, events.StreamName, durable)
}

// F12i: two instances of blog and two of shop share one durable consumer and one database, under
// load; one of each is SIGKILLed mid-run and started again. No event is lost or applied twice,
// and every instance, the survivor and the restarted one, enforces every change: a member the
// admin disabled is refused everywhere, an active one let through everywhere.
func TestInstanceKilled(t *testing.T) {
	row := newRow(t, "F12i", "one of two instances of blog and of shop SIGKILLed under load",
		"blog, blog2, shop, shop2 (one durable consumer and one database per service); registrations, role and status changes from 6 clients, members' posts and orders to every instance from 4, the admin disabling and enabling members; blog2 and shop2 SIGKILLed mid-run, started again 2 s later",
		"lost 0, applied-twice 0, divergence 0; no 500; after quiescence every instance refuses (403) every member that ended disabled and lets every active one through")
	sys := newSystem(t, rig.Options{})
	ctx := context.Background()
	instances := []string{"blog", "blog2", "shop", "shop2"}
	sys.LogErrorsOnFailure(append(stack.Services, "blog2", "shop2")...)
	for _, name := range []string{"blog2", "shop2"} {
		if err := sys.AddInstance(name, name[:4]); err != nil {
			t.Fatal(err)
		}
		if err := sys.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	wait := ackWait(t, sys)
	w := sys.NewWorkload()
	members := w.Customers(ctx, size(10, 30), 4)
	product := w.NewProduct(ctx, "F12i", 100, 1_000_000)
	stopChanges := w.Background(ctx, 6)
	stopTraffic := w.Traffic(ctx, members, product, instances, 4)
	stopFlips := flipStatuses(ctx, w, members)
	var flips, requests int
	stop := func() {
		flips = stopFlips()
		requests = stopTraffic()
		stopChanges()
	}
	time.Sleep(time.Duration(size(1, 3)) * time.Second)
	sys.Kill("blog2")
	sys.Kill("shop2")
	time.Sleep(time.Duration(size(1, 2)) * time.Second)
	for _, name := range []string{"blog2", "shop2"} {
		if err := sys.Start(ctx, name); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	time.Sleep(time.Duration(size(1, 3)) * time.Second)
	stop()
	// Both kinds of member at the end, whatever the dice said: the last changes of all.
	if !acked(w.SetStatus(ctx, members[0].ID, events.StatusDisabled)) || !acked(w.SetStatus(ctx, members[1].ID, events.StatusActive)) {
		t.Fatal("account did not acknowledge the last status changes")
	}
	end := time.Now()

	row.Add("ack wait", wait)
	row.Add("member requests", requests)
	row.Add("status flips by the admin", flips)
	add503s(row, w, instances...)
	sys.Judge(w, row, end, time.Minute+2*wait)

	probes, wrong, disabled := enforcement(t, sys, members, instances)
	row.Add("members disabled at the end", fmt.Sprintf("%d of %d", disabled, len(members)))
	row.Add("enforcement probes", probes)
	row.Add("wrong answers", wrong)
}

// flipStatuses has the admin disable and enable members at random, one change at a time, until
// stop is called; stop returns how many changes it made.
func flipStatuses(ctx context.Context, w *rig.Workload, members []rig.Customer) (stop func() int) {
	var stopped atomic.Bool
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stopped.Load() && ctx.Err() == nil {
			status := events.StatusActive
			if rand.IntN(2) == 0 {
				status = events.StatusDisabled
			}
			if acked(w.SetStatus(ctx, members[rand.IntN(len(members))].ID, status)) {
				n.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return func() int {
		stopped.Store(true)
		wg.Wait()
		return int(n.Load())
	}
}

// enforcement asks every instance twice, as each member, for something only an active user may
// do and that changes nothing (the first answer from the replica's table, the second from the
// instance's view of it): a member account holds disabled must get 403 user_disabled, an active
// one 404 (a post that does not exist) from blog and 200 (its orders) from shop. It reports the
// probes made, the wrong answers (each failing the test), and how many members are disabled.
func enforcement(t *testing.T, sys *rig.System, members []rig.Customer, instances []string) (probes, wrong, disabled int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	states, err := checker.ReadStates(ctx, sys.Pool("account"), checker.AccountUsers)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		st, ok := states[m.ID]
		if !ok {
			t.Fatalf("member %s is not in account", m.ID)
		}
		if st.Status == events.StatusDisabled {
			disabled++
		}
		for _, name := range instances {
			want, path, method := http.StatusNotFound, "/v1/posts/"+uuid.NewString(), http.MethodDelete
			if name[:4] == "shop" {
				want, path, method = http.StatusOK, "/v1/orders", http.MethodGet
			}
			if st.Status == events.StatusDisabled {
				want = http.StatusForbidden
			}
			for range 2 {
				probes++
				r := apitest.Call(t, method, sys.URL[name]+path, m.Token, nil)
				if r.Status != want || (want == http.StatusForbidden && r.Str("code") != "user_disabled") {
					wrong++
					t.Errorf("%s, member %s (%s in account): %s %s answered %d %s, want %d", name, m.ID, st, method, path, r.Status, r.Raw, want)
				}
			}
		}
	}
	return probes, wrong, disabled
}

// F12: a replica's consumer SIGKILLed while it applies a backlog. blog is stopped, a backlog of
// changes made, blog started and SIGKILLed with events in hand once its committed position is
// between 10 % and 90 % of the way through the backlog, then started again; the same for shop. The
// batch cut short rolls back, what it held comes again after the ack wait, and the version gate
// skips what was committed but not acked: every change lands once, and the consumer acks the whole
// backlog.
func TestReplicaKilledMidBatch(t *testing.T) {
	n := size(300, 2000)
	row := newRow(t, "F12", "a replica consumer SIGKILLed while it applies a backlog",
		fmt.Sprintf("for blog, then shop: the service stopped, a backlog of %d role and status changes made, the service started and SIGKILLed with events in hand once its replica_state.last_seq is 10-90 %% through the backlog, started again", n),
		"lost 0, applied-twice 0, divergence 0; no 500; the whole backlog acked within the ack wait and a few seconds")
	sys := newSystem(t, rig.Options{})
	sys.LogErrorsOnFailure(stack.Services...)
	ctx := context.Background()
	wait := ackWait(t, sys)
	w := sys.NewWorkload()
	w.Changes(ctx, 20, 4) // users to change
	row.Add("ack wait", wait)
	var since time.Time
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after t.Context is done, which ends the waits of a failed test
	acked := map[string]*ackedAfter{}
	for _, service := range rig.Replicas {
		k := killMidBatch(t, sys, w, service, n)
		since = time.Now()
		a := &ackedAfter{}
		acked[service] = a
		wg.Go(func() { a.d, a.err = ackedThrough(t.Context(), sys, service, k.to, k.at, wait+30*time.Second) })
		row.Add("backlog "+service, k.backlog)
		row.Add("killed at "+service, fmt.Sprintf("%.0f %% (%d of %d)", 100*k.fraction(), k.committed-k.from, k.to-k.from))
		row.Add("in hand at the kill "+service, k.held)
		if k.tries > 1 {
			row.Add("tries "+service, k.tries)
		}
	}
	sys.Judge(w, row, since, time.Minute+2*wait)
	wg.Wait()
	for _, service := range rig.Replicas {
		a := acked[service]
		if a.err != nil {
			t.Errorf("%s: %v", service, a.err)
			continue
		}
		row.Add("backlog acked after the kill "+service, a.d)
	}
}

// ackedAfter is what ackedThrough found.
type ackedAfter struct {
	d   time.Duration
	err error
}

// ackedThrough waits until the durable consumer of service has had every event up to seq acked
// (its ack floor), at most timeout or until ctx is done, and returns how long after since that was.
func ackedThrough(ctx context.Context, sys *rig.System, service string, seq uint64, since time.Time, timeout time.Duration) (time.Duration, error) {
	cons, err := consumer(sys, service)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var floor uint64
	for {
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		icancel()
		if err == nil {
			floor = info.AckFloor.Stream
		}
		if floor >= seq {
			return time.Since(since), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("events acked through %d, %s after the kill, want %d", floor, time.Since(since).Round(time.Millisecond), seq)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill is where a killMidBatch cut its service: the committed position at the kill, within the
// backlog, which ran from the position at the start (from) to the stream's end (to), and the events
// delivered to it beyond that position (in hand, cut short: they come again after the ack wait).
type kill struct {
	backlog             int
	from, committed, to uint64
	held                int
	at                  time.Time // of the kill
	tries               int
}

func (k kill) fraction() float64 { return float64(k.committed-k.from) / float64(k.to-k.from) }

// killMidBatch stops service, makes a backlog of n changes, starts the service and SIGKILLs it
// while it applies the backlog: as soon as its committed position (replica_state.last_seq) has
// passed a point picked at random 10-90 % of the way through, while it holds the next batch. It
// then starts it again. When the kill found the service with no event in hand (between batches, or
// done) or outside the window, it tries again with a new backlog, maxTries times at most.
func killMidBatch(t *testing.T, sys *rig.System, w *rig.Workload, service string, n int) kill {
	t.Helper()
	const maxTries = 8 // one in three or so misses
	ctx := context.Background()
	for try := 1; try <= maxTries; try++ {
		if err := sys.Stop(service); err != nil {
			t.Fatal(err)
		}
		from := lastApplied(t, sys, service)
		w.Updates(ctx, n, 8)
		to := publishedEnd(t, sys)
		lo, hi := from+(to-from)/10, from+(to-from)*9/10
		target := lo + rand.Uint64N(hi-lo)
		if err := sys.Launch(service); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for lastApplied(t, sys, service) < target && time.Now().Before(deadline) {
		}
		sys.Kill(service)
		at := time.Now()
		committed := lastApplied(t, sys, service)
		held := int(deliveredEnd(t, sys, service)) - int(committed)
		if err := sys.Start(ctx, service); err != nil {
			t.Fatal(err)
		}
		if committed >= lo && committed <= hi && held > 0 {
			return kill{backlog: n, from: from, committed: committed, to: to, held: held, at: at, tries: try}
		}
		t.Logf("%s: committed %d at the kill (window %d..%d), %d events in hand; trying again", service, committed, lo, hi, held)
	}
	t.Fatalf("%s: could not SIGKILL it while it applied the backlog, in %d tries", service, maxTries)
	return kill{}
}

// deliveredEnd is the last stream sequence the durable consumer of service has delivered.
func deliveredEnd(t *testing.T, sys *rig.System, service string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := consumer(sys, service)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Delivered.Stream
}

// lastApplied is the stream sequence a replica has committed up to.
func lastApplied(t *testing.T, sys *rig.System, service string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var seq int64
	if err := sys.Pool(service).QueryRow(ctx, `SELECT last_seq FROM replica_state`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return uint64(seq)
}

// publishedEnd waits until account's outbox has published every event, at most 30 s, and returns
// the stream's last sequence then.
func publishedEnd(t *testing.T, sys *rig.System) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := rig.Within(30*time.Second, func() bool {
		var pending int
		err := sys.Pool("account").QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&pending)
		return err == nil && pending == 0
	})
	if err != nil {
		t.Fatalf("the outbox still holds unpublished events after 30 s")
	}
	js, err := sys.JS()
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// acked reports whether a change was acknowledged.
func acked(out checker.Outcome, _ int64) bool { return out == checker.Acked }
