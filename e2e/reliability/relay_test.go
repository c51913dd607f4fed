package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/e2e/reliability/report"
	"github.com/authmesh/e2e/reliability/rig"
	"github.com/authmesh/events"
	"github.com/nats-io/nats.go/jetstream"
)

// F10: the outbox relay is SIGKILLed after the broker acknowledged some events and before it
// marked them published. Restarted, it publishes them again with the same Nats-Msg-Id: the stream
// de-duplicates them, and nothing is lost.
func TestRelayKilledBeforeMarking(t *testing.T) {
	row := newRow(t, "F10", "relay SIGKILLed between publish and marking",
		"a backlog of changes made with the broker down; the broker back; account (the relay) SIGKILLed once the stream holds events the outbox has not marked; account restarted",
		"the unmarked events are published again and de-duplicated (duplicate window 20 min): dup-in-stream 0, lost 0, applied-twice 0, divergence 0")
	v := relayKill(t, row, rig.Options{}, 0)
	if v.DupInStream != 0 {
		t.Errorf("dup-in-stream %d with account back inside the duplicate window; want 0", v.DupInStream)
	}
}

// F11: as F10, but account comes back after the duplicate window (2 s here): the stream stores
// the events a second time, and the replicas' version gate applies each once.
func TestRelayKilledBeyondWindow(t *testing.T) {
	row := newRow(t, "F11", "relay SIGKILLed, restarted after the duplicate window",
		"as F10 with the stream's duplicate window set to 2 s, account restarted 3 s after the kill",
		"the unmarked events are stored twice (dup-in-stream = unmarked) and applied once: applied-twice 0, lost 0, divergence 0")
	v := relayKill(t, row, rig.Options{DuplicateWindow: 2 * time.Second}, 3*time.Second)
	if v.DupInStream == 0 {
		t.Errorf("dup-in-stream 0 with account back after the window: the fault was not made")
	}
}

// relayKill makes a backlog, lets the relay drain part of it, kills account between the broker's
// acks and the marking, and restarts it after wait.
func relayKill(t *testing.T, row *report.Row, opts rig.Options, wait time.Duration) rig.Verdict {
	sys := newSystem(t, opts)
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, 40, 4)
	backlog := size(600, 3000)
	nd := sys.Broker.Nodes[0]
	js, err := sys.JS()
	if err != nil {
		t.Fatal(err)
	}

	var unmarked int64
	var tries int
	for tries = 1; tries <= 3 && unmarked == 0; tries++ {
		nd.Kill()
		w.Changes(ctx, backlog, 8)
		total := outboxRows(t, sys)
		if err := nd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// Kill account as soon as the stream holds more than the outbox has marked.
		err := rig.Within(time.Minute, func() bool {
			info, err := js.Stream(ctx, events.StreamName)
			if err != nil {
				return false
			}
			st, err := info.Info(ctx)
			if err != nil {
				return false
			}
			if int64(st.State.Msgs) > total-outboxPending(t, sys) {
				sys.Kill("account")
				return true
			}
			return false
		})
		if err != nil {
			t.Fatalf("the relay never ran ahead of its marks: %v", err)
		}
		// What the broker holds of the rows the outbox still has pending, once it has taken in
		// what the relay had sent before it died.
		time.Sleep(500 * time.Millisecond)
		unmarked = inStreamPending(t, sys, js)
		time.Sleep(wait)
		if err := sys.Start(ctx, "account"); err != nil {
			t.Fatal(err)
		}
	}
	end := time.Now()
	row.Add("backlog", backlog)
	row.Add("published, not marked, at the kill", unmarked)
	row.Add("tries", tries-1)
	if unmarked == 0 {
		t.Errorf("in 3 tries, account was never killed between a publish and its marking")
	}
	outboxDrained(t, sys)
	return sys.Judge(w, row, end, time.Minute)
}

// outboxRows counts account's outbox rows.
func outboxRows(t *testing.T, sys *rig.System) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int64
	if err := sys.Pool("account").QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// inStreamPending counts the outbox rows still pending whose event the stream already holds.
func inStreamPending(t *testing.T, sys *rig.System, js jetstream.JetStream) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	evs, _, err := checker.ReadStream(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(evs))
	for _, e := range evs {
		ids = append(ids, e.ID.String())
	}
	var n int64
	err = sys.Pool("account").QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id = ANY($1::uuid[])`, ids).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// F18: account SIGKILLed during registrations, and restarted: a registration in flight at the
// kill is unknown to its client, and either happened entirely (user, outbox row, event, replicas)
// or not at all.
func TestAccountKilled(t *testing.T) {
	kills := size(1, 3)
	row := newRow(t, "F18", "account SIGKILLed during registrations",
		fmt.Sprintf("8 clients registering users and changing them, 4 customers ordering and posting; account SIGKILLed and restarted %d times", kills),
		"each registration in flight either complete everywhere or absent; lost 0, unexpected 0, divergence 0; no 500")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, 20, 4)
	product := w.NewProduct(ctx, "F18", 100, 1_000_000)
	shopping := w.Traffic(ctx, w.Customers(ctx, 4, 4), product, []string{"blog", "shop"}, 4)
	stop := w.Background(ctx, 8)
	for range kills {
		time.Sleep(time.Duration(size(1, 3)) * time.Second)
		sys.Kill("account")
		if err := sys.Start(ctx, "account"); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	stop()
	row.Add("orders and posts", shopping())
	end := time.Now()
	row.Add("kills", kills)
	inFlight := 0
	for _, a := range w.Attempts() {
		if a.Outcome == checker.Unknown {
			inFlight++
		}
	}
	row.Add("in flight at a kill (unknown to the client)", inFlight)
	row.Add("refused while account restarted", w.Refused("account"))
	sys.Judge(w, row, end, time.Minute)
}
