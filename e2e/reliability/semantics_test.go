package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/e2e/reliability/rig"
	"github.com/authmesh/events"
	"github.com/authmesh/events/outbox"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The checks of event semantics (E01–E15): real events of account's stream published again as
// ops (duplicates, stale copies), a poison message, a replay over a live replica, an outbox row
// that commits after later ones. Each ends with the replicas equal to account and no change
// applied twice.

// E01: every real event of the stream published again with its original Nats-Msg-Id, inside the
// duplicate window: the stream takes none of them, and nothing reaches the replicas.
func TestDuplicatesWithinWindow(t *testing.T) {
	row := newRow(t, "E01", "duplicates within the duplicate window",
		"changes from 4 clients; then every message of the stream published again as ops with its original Nats-Msg-Id (window 20 min)",
		"every PubAck Duplicate, stream grows by 0; replicas unchanged; lost 0, applied-twice 0, divergence 0")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, size(40, 400), 4)
	js := mustJS(t, sys)
	outboxDrained(t, sys)
	msgs := readStored(t, ctx, js)
	last := msgs[len(msgs)-1].Seq
	caughtUp(t, sys, last, time.Minute)
	before := replicaSnapshots(t, sys)

	dups := 0
	for _, m := range msgs {
		if m.MsgID != m.Event.ID.String() {
			t.Errorf("seq %d: Nats-Msg-Id %q, want its event id %s", m.Seq, m.MsgID, m.Event.ID)
		}
		ack, err := republish(ctx, js, m, m.MsgID)
		if err != nil {
			t.Fatalf("publish copy of seq %d: %v", m.Seq, err)
		}
		if ack.Duplicate {
			dups++
		}
		if ack.Sequence != m.Seq {
			t.Errorf("copy of seq %d acknowledged with seq %d, want the original", m.Seq, ack.Sequence)
		}
	}
	after := streamInfo(t, ctx, js)
	// Nothing was stored, so nothing can be delivered; give a consumer that would be sent
	// something anyway the time to apply it.
	time.Sleep(time.Second)
	afterRows := replicaSnapshots(t, sys)

	row.Add("republished", len(msgs))
	row.Add("duplicate acks", dups)
	row.Add("stream growth", int64(after.LastSeq)-int64(last))
	row.Add("replica rows changed", changedRows(before, afterRows))
	if dups != len(msgs) {
		t.Errorf("%d of %d copies acknowledged as Duplicate, want all", dups, len(msgs))
	}
	if after.LastSeq != last || after.Msgs != uint64(len(msgs)) {
		t.Errorf("stream after the copies: last seq %d, %d messages; want %d, %d", after.LastSeq, after.Msgs, last, len(msgs))
	}
	if d := cmp.Diff(before, afterRows); d != "" {
		t.Errorf("replicas changed by duplicates (-before +after):\n%s", d)
	}
	v := sys.Judge(w, row, time.Now(), time.Minute)
	if v.DupInStream != 0 {
		t.Errorf("dup-in-stream = %d, want 0", v.DupInStream)
	}
}

// E02: every real event of the stream published again with its original Nats-Msg-Id once the
// duplicate window (2 s here) has passed: the stream stores each copy, and the version gate of
// the replicas skips every one.
func TestDuplicatesBeyondWindow(t *testing.T) {
	slow(t)
	const window = 2 * time.Second
	row := newRow(t, "E02", "duplicates beyond the duplicate window",
		"stream created with a 2 s duplicate window; changes from 4 clients; past the window, every message of the stream published again as ops with its original Nats-Msg-Id",
		"the stream holds 2 copies of each event (dup-in-stream = events); replica rows unchanged; applied-twice 0, divergence 0")
	sys := newSystem(t, rig.Options{DuplicateWindow: window})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, size(40, 400), 4)
	js := mustJS(t, sys)
	outboxDrained(t, sys)
	msgs := readStored(t, ctx, js)
	last := msgs[len(msgs)-1].Seq
	caughtUp(t, sys, last, time.Minute)
	before := replicaSnapshots(t, sys)

	firstDup := republishBeyondWindow(t, ctx, js, msgs, window)
	after := streamInfo(t, ctx, js)
	caughtUp(t, sys, after.LastSeq, time.Minute)
	afterRows := replicaSnapshots(t, sys)

	row.Add("republished", len(msgs))
	row.Add("duplicate acks at first try", firstDup)
	row.Add("stream growth", after.LastSeq-last)
	row.Add("replica rows changed", changedRows(before, afterRows))
	if after.Msgs != 2*uint64(len(msgs)) {
		t.Errorf("stream holds %d messages, want 2 × %d", after.Msgs, len(msgs))
	}
	if d := cmp.Diff(before, afterRows); d != "" {
		t.Errorf("replicas changed by the copies (-before +after):\n%s", d)
	}
	v := sys.Judge(w, row, time.Now(), time.Minute)
	if v.DupInStream != len(msgs) {
		t.Errorf("dup-in-stream = %d, want %d", v.DupInStream, len(msgs))
	}
}

// E03: for users at version 3, their version 3 then their version 2 published again (copies with
// the original Nats-Msg-Ids, past a 2 s duplicate window, so the stream stores them: late, stale
// and out of order). The replicas stay at version 3, and a version 4 made afterwards applies.
//
// The copies carry their original event ids, so the checker counts them as dup-in-stream (copies
// of one event), not as unexpected (a second event for one user version).
func TestStaleReordered(t *testing.T) {
	const window = 2 * time.Second
	users := size(10, 100)
	row := newRow(t, "E03", "stale events, out of order",
		fmt.Sprintf("stream with a 2 s duplicate window; %d users taken to version 3 through account; past the window, each user's v3 then v2 published again as ops with their original Nats-Msg-Ids; then v4 through account", users),
		"replicas stay at v3 (stale copies skipped), then take v4; dup-in-stream = 2 × users; applied-twice 0, divergence 0")
	sys := newSystem(t, rig.Options{DuplicateWindow: window})
	w := sys.NewWorkload()
	ctx := context.Background()
	ids := threeVersions(t, ctx, w, users)
	js := mustJS(t, sys)
	outboxDrained(t, sys)
	msgs := readStored(t, ctx, js)
	caughtUp(t, sys, msgs[len(msgs)-1].Seq, time.Minute)
	before := replicaSnapshots(t, sys)

	byVersion := map[checker.Change]stored{}
	for _, m := range msgs {
		byVersion[checker.Change{User: m.Event.User.ID, Version: m.Event.User.Version}] = m
	}
	var copies []stored
	for _, id := range ids {
		for _, v := range []int64{3, 2} {
			m, ok := byVersion[checker.Change{User: id, Version: v}]
			if !ok {
				t.Fatalf("user %s version %d is not in the stream", id, v)
			}
			copies = append(copies, m)
		}
	}
	republishBeyondWindow(t, ctx, js, copies, window)
	after := streamInfo(t, ctx, js)
	caughtUp(t, sys, after.LastSeq, time.Minute)
	afterRows := replicaSnapshots(t, sys)
	stale := 0
	for r, rows := range afterRows {
		for _, id := range ids {
			if got := rows[id]; got.Version != 3 {
				stale++
				t.Errorf("%s holds user %s at version %d after the stale copies, want 3", r, id, got.Version)
			}
		}
	}
	row.Add("stale copies published", len(copies))
	row.Add("replica rows changed by them", changedRows(before, afterRows))
	row.Add("users not at v3", stale)
	if d := cmp.Diff(before, afterRows); d != "" {
		t.Errorf("replicas changed by stale copies (-before +after):\n%s", d)
	}

	// Version 4 of every user goes through: the copies left nothing stuck.
	for _, id := range ids {
		if out, v := w.SetRoles(ctx, id, []string{"user"}); out != checker.Acked || v != 4 {
			t.Fatalf("set roles of %s: %s version %d, want acked version 4", id, out, v)
		}
	}
	verdict := sys.Judge(w, row, time.Now(), time.Minute)
	if verdict.DupInStream != len(copies) {
		t.Errorf("dup-in-stream = %d, want %d", verdict.DupInStream, len(copies))
	}
}

// threeVersions registers n users through account and changes each twice (roles, then status),
// with 4 clients, so that each is at version 3; it returns them.
func threeVersions(t *testing.T, ctx context.Context, w *rig.Workload, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range next {
				id, ok := w.Register(ctx)
				if !ok {
					errs <- fmt.Errorf("registration %d not acked", i)
					continue
				}
				ids[i] = id
				if out, v := w.SetRoles(ctx, id, []string{"user", "moderator"}); out != checker.Acked || v != 2 {
					errs <- fmt.Errorf("set roles of %s: %s version %d", id, out, v)
					continue
				}
				if out, v := w.SetStatus(ctx, id, "disabled"); out != checker.Acked || v != 3 {
					errs <- fmt.Errorf("set status of %s: %s version %d", id, out, v)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// E05: poison published as ops on three users' subjects in the middle of a burst of real
// changes through account: undecodable bytes, a schema-invalid event, and a copy of a real event
// that decodes and validates but that Postgres refuses (a NUL in the display name; the batch it
// is in fails and is applied one by one). Both replicas dead-letter exactly those three and apply
// every good event; the three users get 503 until the dead letters are resolved the way
// docs/operations.md says (a later event of the user, then `replica dead-letters retry`).
func TestPoisonMessage(t *testing.T) {
	n := size(100, 1000)
	row := newRow(t, "E05", "a poison message among good ones",
		fmt.Sprintf("%d changes from 8 clients through account; half way, as ops: undecodable bytes on users.role_changed.<P1>, a schema-invalid event on users.status_changed.<P2>, P3's user.created with a NUL in its display name (same event id, new Nats-Msg-Id)", n),
		"both replicas dead-letter exactly the 3 poison messages and apply every good event; P1–P3 get 503 replica_lagging until a later event of theirs and `dead-letters retry` (superseded); lost 0, applied-twice 0, divergence 0")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	js := mustJS(t, sys)

	// The poison users are registered aside, so that the burst does not change them: the order of
	// the resolution is then certain. Their attempts join the history afterwards.
	aside := sys.NewWorkload()
	var poisoned [3]uuid.UUID
	var tokens [3]string
	for i := range poisoned {
		id, ok := aside.Register(ctx)
		if !ok {
			t.Fatal("registration of a poison user not acked")
		}
		poisoned[i] = id
		tokens[i] = apitest.Login(t, sys.URL["account"], accountEmail(t, sys, id), rig.Password)
	}
	start := caughtUpAll(t, sys, ctx, js)
	var created stored
	for _, m := range readStored(t, ctx, js) {
		if m.Event.Type == events.UserCreated && m.Event.User.ID == poisoned[2] {
			created = m
		}
	}
	for i, tok := range tokens {
		for _, svc := range rig.Replicas {
			if r := authorized(t, sys, svc, tok); r.Status != servedStatus[svc] {
				t.Fatalf("%s to poison user P%d before the poison: %d %s, want %d", svc, i+1, r.Status, r.Raw, servedStatus[svc])
			}
		}
	}

	burst := make(chan struct{})
	go func() {
		defer close(burst)
		w.Changes(ctx, n, 8)
	}()
	defer func() { <-burst }() // also when the test fails half way
	if err := rig.Within(time.Minute, func() bool { return streamInfo(t, ctx, js).LastSeq >= start+uint64(n/2) }); err != nil {
		t.Errorf("the burst did not reach half way: %v", err)
	}
	poison := []stored{
		{Subject: events.Subject(events.UserRoleChanged, poisoned[0]), Data: []byte("\xff\xfe not json \x00{")},
		{Subject: events.Subject(events.UserStatusChanged, poisoned[1]), Data: schemaInvalid(poisoned[1])},
		{Subject: created.Subject, Data: withNUL(t, created.Event)},
	}
	var poisonSeq []uint64
	var published []time.Time
	for i, m := range poison {
		at := time.Now()
		ack, err := republish(ctx, js, m, uuid.NewString())
		if err != nil {
			t.Fatalf("publish poison %d: %v", i, err)
		}
		poisonSeq, published = append(poisonSeq, ack.Sequence), append(published, at)
	}
	<-burst
	end := time.Now()
	for _, a := range aside.Attempts() {
		w.Record(a)
	}

	// Both replicas dead-letter exactly the poison, and apply the rest.
	last := caughtUpAll(t, sys, ctx, js)
	row.Add("poison at seqs", fmt.Sprintf("%v of %d..%d", poisonSeq, start+1, last))
	for _, svc := range rig.Replicas {
		dls := deadLetters(t, sys, svc)
		var seqs []uint64
		var took time.Duration
		for _, d := range dls {
			seqs = append(seqs, d.Seq)
			i := slices.Index(poisonSeq, d.Seq)
			if i < 0 {
				continue
			}
			took = max(took, d.Recorded.Sub(published[i]))
			if d.UserID == nil || uuid.MustParse(*d.UserID) != poisoned[i] {
				t.Errorf("%s dead letter seq %d names user %v, want P%d %s", svc, d.Seq, d.UserID, i+1, poisoned[i])
			}
		}
		if !slices.Equal(seqs, poisonSeq) {
			t.Errorf("%s dead letters at seqs %v, want exactly the poison %v", svc, seqs, poisonSeq)
		}
		row.Add("dead letters "+svc, len(dls))
		row.Add("time to dead-letter "+svc, took)
	}
	good := goodApplied(t, sys, ctx, js, start, last, poisonSeq)
	for _, svc := range rig.Replicas {
		row.Add("good applied "+svc, fmt.Sprintf("%d/%d", good[svc], good[""]))
		if good[svc] != good[""] {
			t.Errorf("%s applied %d of the %d good events of the burst", svc, good[svc], good[""])
		}
	}

	// The poison users are failed closed until the dead letters are resolved. A retry cannot
	// apply the poison; a later event of the user (account publishes its state again) supersedes
	// it, and the next retry resolves it.
	probes := len(tokens) * len(rig.Replicas)
	want503 := func(when string) string {
		t.Helper()
		n := 0
		for i, tok := range tokens {
			for _, svc := range rig.Replicas {
				r := authorized(t, sys, svc, tok)
				if r.Status != http.StatusServiceUnavailable || r.Str("code") != "replica_lagging" || r.Header.Get("Retry-After") == "" {
					t.Errorf("%s to poison user P%d %s: %d %s, want 503 replica_lagging with Retry-After", svc, i+1, when, r.Status, r.Raw)
					continue
				}
				n++
			}
		}
		return fmt.Sprintf("%d/%d", n, probes)
	}
	row.Add("503 to P1–P3 after the poison", want503("after the poison"))
	for _, svc := range rig.Replicas {
		out, code := runCmd(t, sys, svc, "replica", "dead-letters", "retry")
		row.Add("retry before a fix "+svc, fmt.Sprintf("exit %d: %s", code, lastLine(out)))
		if code != 1 || strings.Count(out, ": failed") != len(poison) {
			t.Errorf("%s replica dead-letters retry before any fix: exit %d\n%s\nwant exit 1, all failed", svc, code, out)
		}
	}
	for _, id := range poisoned {
		if out, _ := w.SetRoles(ctx, id, []string{"user", "moderator"}); out != checker.Acked {
			t.Fatalf("set roles of poison user %s: %s", id, out)
		}
	}
	caughtUpAll(t, sys, ctx, js)
	row.Add("503 after a later event, before retry", want503("after a later event, before retry"))
	for _, svc := range rig.Replicas {
		out, code := runCmd(t, sys, svc, "replica", "dead-letters", "retry")
		row.Add("retry after a later event "+svc, fmt.Sprintf("exit %d: %s", code, lastLine(out)))
		if code != 0 || strings.Count(out, ": superseded") != len(poison) {
			t.Errorf("%s replica dead-letters retry after a later event: exit %d\n%s\nwant exit 0, all superseded", svc, code, out)
		}
		if dls := deadLetters(t, sys, svc); len(dls) != 0 {
			t.Errorf("%s still holds %d dead letters after the retry", svc, len(dls))
		}
	}
	served := 0
	for i, tok := range tokens {
		for _, svc := range rig.Replicas {
			if r := authorized(t, sys, svc, tok); r.Status != servedStatus[svc] {
				t.Errorf("%s to poison user P%d after the retry: %d %s, want %d", svc, i+1, r.Status, r.Raw, servedStatus[svc])
			} else {
				served++
			}
		}
	}
	row.Add("served after retry", fmt.Sprintf("%d/%d", served, probes))

	// The checker reads P1's and P2's poison as undecodable, and P3's as a second copy of its
	// user.created (same event id).
	v := sys.Judge(w, row, end, time.Minute)
	row.Add("undecodable", v.Undecodable)
	if v.Undecodable != 2 {
		t.Errorf("undecodable messages in the stream = %d, want 2", v.Undecodable)
	}
	if v.DupInStream != 1 {
		t.Errorf("dup-in-stream = %d, want 1 (P3's poison copy)", v.DupInStream)
	}
}

// withNUL is e, a real event, with a NUL in its user's display name: valid JSON and a valid
// event, which Postgres refuses to store in a text column.
func withNUL(t *testing.T, e events.Event) []byte {
	t.Helper()
	e.User.DisplayName += "\x00"
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// schemaInvalid is JSON shaped like an event of user id that Validate refuses: an unknown status,
// version 0, no email, no role "user".
func schemaInvalid(id uuid.UUID) []byte {
	b, err := json.Marshal(map[string]any{
		"id": uuid.NewString(), "type": events.UserStatusChanged, "occurred_at": time.Now().UTC(),
		"user": map[string]any{"id": id, "email": "", "display_name": "P", "roles": []string{"admin"}, "status": "suspended", "version": 0},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// servedStatus is the answer to authorized of an active user whose replica row is current.
var servedStatus = map[string]int{"blog": http.StatusNotFound, "shop": http.StatusOK}

// authorized sends a request that needs an authorized user to service, as the holder of token:
// PATCH of a post that does not exist on blog, the user's orders on shop.
func authorized(t *testing.T, sys *rig.System, service, token string) apitest.Response {
	t.Helper()
	if service == "blog" {
		return apitest.Call(t, http.MethodPatch, sys.URL["blog"]+"/v1/posts/"+uuid.NewString(), token, map[string]any{"title": "x"})
	}
	return apitest.Call(t, http.MethodGet, sys.URL[service]+"/v1/orders", token, nil)
}

// goodApplied counts, in the stream between the sequences after and upTo, the distinct changes
// of the good events (all but those at the sequences of poison) under key "", and under each
// replica's name how many of them its audit log shows committed.
func goodApplied(t *testing.T, sys *rig.System, ctx context.Context, js jetstream.JetStream, after, upTo uint64, poison []uint64) map[string]int {
	t.Helper()
	evs, _, err := checker.ReadStream(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	want := map[checker.Change]bool{}
	for _, e := range evs {
		if e.Seq > after && e.Seq <= upTo && !slices.Contains(poison, e.Seq) {
			want[checker.Change{User: e.User.ID, Version: e.User.Version}] = true
		}
	}
	got := map[string]int{"": len(want)}
	for _, svc := range rig.Replicas {
		rows, err := sys.Pool(svc).Query(ctx, `SELECT DISTINCT user_id, version FROM reliability_applied`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var c checker.Change
			if err := rows.Scan(&c.User, &c.Version); err != nil {
				t.Fatal(err)
			}
			if want[c] {
				got[svc]++
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// E12: `replica rebuild --from-seq 1` of each replica while its service runs and serves: the
// replay of the whole stream over the live replica changes no row, and `replica verify` agrees.
// Then the same replay while changes go on: nothing the consumer applies meanwhile is lost.
func TestReplayOverLiveReplica(t *testing.T) {
	n := size(100, 2000)
	row := newRow(t, "E12", "a replay over a live replica",
		fmt.Sprintf("%d changes from 8 clients; then `replica rebuild --from-seq 1` of blog and shop while they serve requests; then the same rebuilds while 4 clients make changes", n),
		"quiet: each replica's rows (id, email, name, roles, status, version, stream_seq) equal before and after, `replica verify` exits 0; under changes: verify exits 0; requests served throughout; applied-twice 0, divergence 0")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, n, 8)
	js := mustJS(t, sys)
	caughtUpAll(t, sys, ctx, js)
	before := replicaSnapshots(t, sys)

	// Requests that read the replica (the admin's) go on during every rebuild.
	reads := make(chan struct{})
	served := make(chan [2]int, 1)
	go func() {
		var ok, other int
		for {
			select {
			case <-reads:
				served <- [2]int{ok, other}
				return
			default:
			}
			for _, svc := range rig.Replicas {
				var st int
				if svc == "blog" {
					st = w.Call(ctx, svc, http.MethodPatch, "/v1/posts/"+uuid.NewString(), sys.Admin, map[string]any{"title": "x"})
				} else {
					st = w.Call(ctx, svc, http.MethodGet, "/v1/orders", sys.Admin, nil)
				}
				if st == servedStatus[svc] {
					ok++
				} else {
					other++
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	stopReads := sync.OnceValue(func() [2]int {
		close(reads)
		return <-served
	})
	defer stopReads()
	rebuild := func(phase string) {
		t.Helper()
		for _, svc := range rig.Replicas {
			start := time.Now()
			out, code := runCmd(t, sys, svc, "replica", "rebuild", "--from-seq", "1")
			row.Add("rebuild "+phase+" "+svc, fmt.Sprintf("exit %d in %s", code, time.Since(start).Round(time.Millisecond)))
			if code != 0 {
				t.Fatalf("%s replica rebuild --from-seq 1: exit %d\n%s", svc, code, out)
			}
			if phase == "quiet" && !strings.Contains(out, ", applied 0,") {
				t.Errorf("%s replica rebuild --from-seq 1 applied events over an up-to-date replica:\n%s", svc, out)
			}
			// The swapped-in table has no audit trigger.
			if err := sys.Audit(svc); err != nil {
				t.Fatal(err)
			}
		}
	}
	verify := func(phase string) {
		t.Helper()
		for _, svc := range rig.Replicas {
			out, code := runCmd(t, sys, svc, "replica", "verify")
			row.Add("verify "+phase+" "+svc, fmt.Sprintf("exit %d", code))
			if code != 0 {
				t.Errorf("%s replica verify after the %s rebuild: exit %d\n%s", svc, phase, code, out)
			}
		}
	}

	rebuild("quiet")
	afterRows := replicaSnapshots(t, sys)
	row.Add("users", len(before["blog"]))
	row.Add("rows changed", changedRows(before, afterRows))
	if d := cmp.Diff(before, afterRows); d != "" {
		t.Errorf("the replay changed the replicas (-before +after):\n%s", d)
	}
	verify("quiet")

	stop := w.Background(ctx, 4)
	time.Sleep(500 * time.Millisecond)
	rebuild("under changes")
	time.Sleep(500 * time.Millisecond)
	row.Add("changes during", stop())
	end := time.Now()
	counts := stopReads()
	row.Add("reads during rebuilds (answered/other)", fmt.Sprintf("%d/%d", counts[0], counts[1]))
	if counts[1] > 0 {
		t.Errorf("%d reads during the rebuilds answered other than 404 (blog) or 200 (shop)", counts[1])
	}
	if _, err := sys.Settle(end, time.Minute); err != nil {
		t.Error(err)
	}
	caughtUpAll(t, sys, ctx, js)
	verify("under changes")
	sys.Judge(w, row, end, time.Minute)
}

// E15: a transaction of account's database changes a user and takes an outbox id, as account
// does, and stays open while later changes through the API commit with higher ids and are
// published; when it commits, its event is published and applied all the same. Then the sharper
// form of the trap: the held row commits while a pass of the relay is publishing a backlog of
// later rows, having read past its id.
func TestOutboxLateCommit(t *testing.T) {
	later, backlog := size(5, 50), size(90, 900)
	row := newRow(t, "E15", "an outbox row that commits after later ones",
		fmt.Sprintf("(1) a transaction on account's database changes a user and adds its outbox row (outbox.Add), and stays open while %d changes through account commit with higher outbox ids and are published; then it commits. (2) the same, with the broker stopped while %d later changes commit; their outbox rows locked (as a slow mark would find them), the broker back: the relay's pass publishes the backlog and waits in its mark, and the held transaction commits then", later, backlog),
		"each held event is published and applied once it commits; lost 0, applied-twice 0, divergence 0")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	var users []uuid.UUID // two to hold, three to change meanwhile
	for range 5 {
		id, ok := w.Register(ctx)
		if !ok {
			t.Fatal("registration not acked")
		}
		users = append(users, id)
	}
	held, others := users[:2], users[2:]
	pool := sys.Pool("account")
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// change makes change i through account: of each of the others in turn.
	change := func(i int) {
		roles := []string{"user"}
		if (i/len(others))%2 == 0 {
			roles = append(roles, "moderator")
		}
		if out, _ := w.SetRoles(ctx, others[i%len(others)], roles); out != checker.Acked {
			t.Errorf("change %d: %s", i, out)
		}
	}
	// publishedAfter counts the rows after id that the relay has published.
	publishedAfter := func(id int64) int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE published_at IS NOT NULL) FROM outbox WHERE id > $1`, id).Scan(&n); err != nil {
			t.Error(err)
		}
		return n
	}
	// committed records the held change e, committed at at, as acked, and waits for the relay to
	// publish its row id.
	committed := func(phase string, e events.Event, id int64, at time.Time) {
		t.Helper()
		w.Record(checker.Attempt{Op: checker.OpRoles, Outcome: checker.Acked, User: e.User.ID, Version: e.User.Version})
		var seq *int64
		for seq == nil {
			if time.Since(at) > 30*time.Second {
				row.Add(phase+": held row published after its commit", "never")
				t.Errorf("%s: the held event (outbox id %d) not published within 30 s of its commit", phase, id)
				return
			}
			time.Sleep(2 * time.Millisecond)
			if err := pool.QueryRow(ctx, `SELECT stream_seq FROM outbox WHERE id = $1`, id).Scan(&seq); err != nil {
				t.Fatal(err)
			}
		}
		row.Add(phase+": held row published after its commit", time.Since(at))
	}

	// (1) Later changes commit and are published while the row is held.
	tx, err := pool.BeginTx(tctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	e, heldID := holdChange(t, tctx, tx, held[0])
	for i := range later {
		change(i)
	}
	if err := rig.Within(30*time.Second, func() bool { return publishedAfter(heldID) >= later }); err != nil {
		t.Fatalf("later changes published: %d of %d", publishedAfter(heldID), later)
	}
	row.Add("1: later rows published while held", publishedAfter(heldID))
	if err := tx.Commit(tctx); err != nil {
		t.Fatalf("commit the held change: %v", err)
	}
	committed("1", e, heldID, time.Now())

	// (2) The held row commits while a pass publishes a backlog past it.
	tx2, err := pool.BeginTx(tctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(context.Background())
	e2, heldID2 := holdChange(t, tctx, tx2, held[1])
	js := mustJS(t, sys)
	base := streamInfo(t, ctx, js).LastSeq
	nd := sys.Broker.Nodes[0]
	nd.Stop()
	var wg sync.WaitGroup
	for k := range others {
		wg.Go(func() {
			for i := k; i < backlog; i += len(others) {
				change(i)
			}
		})
	}
	wg.Wait()
	// The relay marks rows published at the end of its pass (and every 500 during it): with the
	// backlog's rows locked, the pass that publishes them waits in its mark, having read past the
	// held row, which commits then. (The relay's sessions give up a lock after 2 s; this takes
	// milliseconds.)
	lock, err := pool.Begin(tctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	var locked int
	if err := lock.QueryRow(tctx, `WITH l AS (SELECT id FROM outbox WHERE id > $1 FOR UPDATE) SELECT count(*) FROM l`, heldID2).Scan(&locked); err != nil {
		t.Fatal(err)
	}
	if locked != backlog {
		t.Fatalf("locked %d outbox rows after the held one, want the backlog of %d", locked, backlog)
	}
	if err := nd.Start(tctx); err != nil {
		t.Fatal(err)
	}
	if err := rig.Within(30*time.Second, func() bool { return streamInfo(t, ctx, js).LastSeq >= base+uint64(backlog) }); err != nil {
		t.Fatalf("the relay did not publish the backlog within 30 s of the broker's return (stream at %d, want %d)", streamInfo(t, ctx, js).LastSeq, base+uint64(backlog))
	}
	row.Add("2: backlog in the stream when the held row committed", fmt.Sprintf("%d/%d (%d marked published)", streamInfo(t, ctx, js).LastSeq-base, backlog, publishedAfter(heldID2)))
	if err := tx2.Commit(tctx); err != nil {
		t.Fatalf("commit the held change: %v", err)
	}
	if err := lock.Rollback(tctx); err != nil {
		t.Fatal(err)
	}
	committed("2", e2, heldID2, time.Now())
	sys.Judge(w, row, time.Now(), time.Minute)
}

// holdChange changes user id in tx as account's store does (account/internal/postgres/users.go:
// the user row at the next version, its event added with outbox.Add) and returns the event and
// the outbox id it took. The roles given make it a change whatever the user held.
func holdChange(t *testing.T, ctx context.Context, tx pgx.Tx, id uuid.UUID) (events.Event, int64) {
	t.Helper()
	const update = `UPDATE users
		SET roles = $2, version = version + 1, updated_at = greatest(clock_timestamp(), updated_at)
		WHERE id = $1
		RETURNING email, display_name, roles, status, version, updated_at`
	u := events.User{ID: id}
	var at time.Time
	err := tx.QueryRow(ctx, update, id, []string{"user", "moderator"}).Scan(&u.Email, &u.DisplayName, &u.Roles, &u.Status, &u.Version, &at)
	if err != nil {
		t.Fatalf("hold a change of %s: %v", id, err)
	}
	e, err := events.NewEvent(events.UserRoleChanged, u, at)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Add(ctx, tx, e); err != nil {
		t.Fatal(err)
	}
	var outboxID int64
	if err := tx.QueryRow(ctx, `SELECT id FROM outbox WHERE event_id = $1`, e.ID).Scan(&outboxID); err != nil {
		t.Fatal(err)
	}
	return e, outboxID
}

// stored is a message of the USERS stream as the server stores it: what a copy republishes.
type stored struct {
	Seq     uint64
	Subject string
	Data    []byte
	MsgID   string
	Event   events.Event // zero when the payload is no event
}

// readStored reads every message of the stream, one sequence at a time.
func readStored(t *testing.T, ctx context.Context, js jetstream.JetStream) []stored {
	t.Helper()
	str, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []stored
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := str.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream message %d: %v", seq, err)
		}
		s := stored{Seq: m.Sequence, Subject: m.Subject, Data: m.Data, MsgID: m.Header.Get(nats.MsgIdHdr)}
		_ = json.Unmarshal(m.Data, &s.Event)
		msgs = append(msgs, s)
	}
	if len(msgs) == 0 {
		t.Fatal("the stream is empty")
	}
	return msgs
}

// republish publishes a copy of m as ops with Nats-Msg-Id id.
func republish(ctx context.Context, js jetstream.JetStream, m stored, id string) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
	return js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(events.StreamName))
}

// republishBeyondWindow waits for the duplicate window to pass since the last of msgs, then
// publishes a copy of each, in order, with its original Nats-Msg-Id, until the stream stores it:
// the server forgets ids on a timer, so a copy may still be refused as a Duplicate (not stored)
// for a moment; it is then sent again. It returns how many were refused at the first try.
func republishBeyondWindow(t *testing.T, ctx context.Context, js jetstream.JetStream, msgs []stored, window time.Duration) int {
	t.Helper()
	time.Sleep(window + window/2)
	deadline := time.Now().Add(4 * window)
	refused := 0
	for _, m := range msgs {
		for try := 0; ; try++ {
			ack, err := republish(ctx, js, m, m.MsgID)
			if err != nil {
				t.Fatalf("publish copy of seq %d: %v", m.Seq, err)
			}
			if !ack.Duplicate {
				break
			}
			if try == 0 {
				refused++
			}
			if time.Now().After(deadline) {
				t.Fatalf("copy of seq %d still refused as Duplicate %s past the window", m.Seq, 5*window)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return refused
}

func mustJS(t *testing.T, sys *rig.System) jetstream.JetStream {
	t.Helper()
	js, err := sys.JS()
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func streamInfo(t *testing.T, ctx context.Context, js jetstream.JetStream) jetstream.StreamState {
	t.Helper()
	str, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// outboxDrained waits until account's relay has published every event of its outbox.
func outboxDrained(t *testing.T, sys *rig.System) {
	t.Helper()
	if err := rig.Within(time.Minute, func() bool { return outboxPending(t, sys) == 0 }); err != nil {
		t.Fatalf("account's outbox still holds %d unpublished events: %v", outboxPending(t, sys), err)
	}
}

// caughtUpAll waits until account has published its whole outbox and both replicas have
// committed the stream up to its last sequence, which it returns.
func caughtUpAll(t *testing.T, sys *rig.System, ctx context.Context, js jetstream.JetStream) uint64 {
	t.Helper()
	outboxDrained(t, sys)
	last := streamInfo(t, ctx, js).LastSeq
	caughtUp(t, sys, last, time.Minute)
	return last
}

// caughtUp waits until both replicas have committed the stream up to seq.
func caughtUp(t *testing.T, sys *rig.System, seq uint64, timeout time.Duration) {
	t.Helper()
	for _, svc := range rig.Replicas {
		var got int64
		err := rig.Within(timeout, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return sys.Pool(svc).QueryRow(ctx, `SELECT last_seq FROM replica_state`).Scan(&got) == nil && uint64(got) >= seq
		})
		if err != nil {
			t.Fatalf("%s applied up to seq %d, want %d: %v", svc, got, seq, err)
		}
	}
}

// replicaRow is a replica's row of a user, as the consumer wrote it.
type replicaRow struct {
	Email, DisplayName string
	Roles              []string
	Status             string
	Version, StreamSeq int64
}

// replicaSnapshots reads every replica's rows, by replica and user.
func replicaSnapshots(t *testing.T, sys *rig.System) map[string]map[uuid.UUID]replicaRow {
	t.Helper()
	out := map[string]map[uuid.UUID]replicaRow{}
	for _, svc := range rig.Replicas {
		out[svc] = replicaRows(t, sys.Pool(svc))
	}
	return out
}

func replicaRows(t *testing.T, pool *pgxpool.Pool) map[uuid.UUID]replicaRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT id, email, display_name, roles, status, version, stream_seq FROM replica_users`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]replicaRow{}
	for rows.Next() {
		var id uuid.UUID
		var r replicaRow
		if err := rows.Scan(&id, &r.Email, &r.DisplayName, &r.Roles, &r.Status, &r.Version, &r.StreamSeq); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// changedRows counts the rows that differ between two snapshots, over every replica.
func changedRows(before, after map[string]map[uuid.UUID]replicaRow) int {
	n := 0
	for svc, rows := range after {
		for id, r := range rows {
			if b, ok := before[svc][id]; !ok || !cmp.Equal(b, r) {
				n++
			}
		}
		for id := range before[svc] {
			if _, ok := rows[id]; !ok {
				n++
			}
		}
	}
	return n
}

// deadLetter is a line of `replica dead-letters list --json`.
type deadLetter struct {
	Seq      uint64    `json:"seq"`
	Subject  string    `json:"subject"`
	UserID   *string   `json:"user_id"`
	Reason   string    `json:"reason"`
	Recorded time.Time `json:"recorded_at"`
}

// deadLetters lists service's dead letters with its operator command.
func deadLetters(t *testing.T, sys *rig.System, service string) []deadLetter {
	t.Helper()
	out, code := runCmd(t, sys, service, "replica", "dead-letters", "list", "--json")
	if code != 0 {
		t.Fatalf("%s replica dead-letters list --json: exit %d\n%s", service, code, out)
	}
	var dls []deadLetter
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var d deadLetter
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("%s dead letter %q: %v", service, sc.Text(), err)
		}
		dls = append(dls, d)
	}
	return dls
}

// runCmd runs an operator command of service and returns its output (stdout then stderr) and
// exit code.
func runCmd(t *testing.T, sys *rig.System, service string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := sys.Cmd(ctx, service, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String() + stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String() + stderr.String(), exit.ExitCode()
	default:
		t.Fatalf("%s %s: %v", service, strings.Join(args, " "), err)
		return "", -1
	}
}

// accountEmail returns the email of user id in account's database.
func accountEmail(t *testing.T, sys *rig.System, id uuid.UUID) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var email string
	if err := sys.Pool("account").QueryRow(ctx, `SELECT email FROM users WHERE id = $1`, id).Scan(&email); err != nil {
		t.Fatal(err)
	}
	return email
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
