package replica_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authmesh/events/replica"
)

// row is a replica row as a test compares it.
type row struct {
	User      events.User
	StreamSeq int64
}

// rows returns the rows of the live replica by id.
func rows(t *testing.T, pool *pgxpool.Pool) map[uuid.UUID]row {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT id, email, display_name, roles, status, version, stream_seq FROM replica_users`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]row{}
	for rs.Next() {
		var r row
		u := &r.User
		if err := rs.Scan(&u.ID, &u.Email, &u.DisplayName, &u.Roles, &u.Status, &u.Version, &r.StreamSeq); err != nil {
			t.Fatal(err)
		}
		out[u.ID] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func tableExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// publishUsers publishes n new users, each at version 1 then 2 (a role change), and returns them at
// version 2 and the last sequence.
func publishUsers(t *testing.T, e env, n int) ([]events.User, uint64) {
	t.Helper()
	var us []events.User
	var last uint64
	for range n {
		u := authtest.NewUser()
		publishEvent(t, e.pub, events.Subject(events.UserCreated, u.ID), event(t, u))
		u.Version, u.Roles = 2, []string{events.RoleUser, events.RoleModerator}
		last = publishEvent(t, e.pub, events.Subject(events.UserRoleChanged, u.ID), event(t, u))
		us = append(us, u)
	}
	return us, last
}

func verifyEqual(t *testing.T, e env) {
	t.Helper()
	res, err := replica.Verify(context.Background(), e.pool, e.js, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(res.Differences) > 0 || res.Unchecked > 0 {
		t.Errorf("Verify = %d differences, %d unchecked, want none: %+v", len(res.Differences), res.Unchecked, res.Differences)
	}
}

func TestRebuildWhileServing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: patience})
	start(t, r)
	users, last := publishUsers(t, e, 150)
	// A poison message: the rebuild skips it as the consumer dead-letters it.
	publishRaw(t, e.pub, events.Subject(events.UserCreated, uuid.New()), []byte("{not json"))
	eventually(t, "all applied", func() bool { return applied(t, e.pool) == last+1 })
	// A row that the stream does not hold: a full rebuild drops it.
	stray := authtest.NewUser()
	exec(t, e.pool, `INSERT INTO replica_users (id, email, display_name, roles, status, version, stream_seq)
		VALUES ($1, 'x@example.com', 'x', '{user}', 'active', 1, 1)`, stray.ID)

	// Clients keep authorizing known users for the whole rebuild, as the middleware does.
	var failures atomic.Int64
	var lookups atomic.Int64
	var firstErr atomic.Value
	ctx, stopClients := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	for c := range 4 {
		clients.Go(func() {
			for i := c; ctx.Err() == nil; i++ {
				u := users[i%len(users)]
				if _, err := r.User(ctx, u.ID, u.Version); err != nil && ctx.Err() == nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				lookups.Add(1)
			}
		})
	}

	// While the rebuild runs, the consumer applies more: new users, and a change to an old one.
	var during []events.User
	changed := users[0]
	changed.Version, changed.Status = 3, events.StatusDisabled
	progress := func(p replica.Progress) {
		if during != nil {
			return
		}
		for range 10 {
			u := authtest.NewUser()
			publishEvent(t, e.pub, events.Subject(events.UserCreated, u.ID), event(t, u))
			during = append(during, u)
		}
		seq := publishEvent(t, e.pub, events.Subject(events.UserStatusChanged, changed.ID), event(t, changed))
		eventually(t, "applied during the rebuild", func() bool { return applied(t, e.pool) >= seq })
	}
	res, err := replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{Progress: progress})
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	// Keep the clients going across the swap a little longer, then stop them.
	eventually(t, "lookups after the swap", func() bool { return lookups.Load() > 100 })
	time.Sleep(100 * time.Millisecond)
	stopClients()
	clients.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d lookups failed during the rebuild; first: %v", n, lookups.Load(), firstErr.Load())
	}

	want := replica.RebuildResult{Full: true, LastSeq: last + 1, Read: last + 1, Applied: last, Skipped: 1, Invalid: 1, Merged: 11}
	if diff := cmp.Diff(want, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild (-want +got):\n%s", diff)
	}
	got := rows(t, e.pool)
	if _, ok := got[stray.ID]; ok {
		t.Errorf("stray row survived a full rebuild")
	}
	if g := got[changed.ID].User; g.Version != 3 || g.Status != events.StatusDisabled {
		t.Errorf("user changed during the rebuild = %+v, want version 3, disabled", g)
	}
	for _, u := range during {
		if _, ok := got[u.ID]; !ok {
			t.Errorf("user %s created during the rebuild is missing", u.ID)
		}
	}
	if tableExists(t, e.pool, replica.ShadowTable) {
		t.Errorf("%s still exists after the swap", replica.ShadowTable)
	}
	if !tableExists(t, e.pool, "replica_users_pkey") {
		t.Errorf("index replica_users_pkey missing after the swap: the next rebuild's names would collide")
	}

	// The consumer goes on writing into the new table, and User is woken by its NOTIFY.
	after := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, after)
	if _, err := r.User(context.Background(), after.ID, 1); err != nil {
		t.Fatalf("User after the swap: %v", err)
	}
	verifyEqual(t, e)

	// A second rebuild finds its names free.
	if _, err := replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{}); err != nil {
		t.Fatalf("second Rebuild: %v", err)
	}
	verifyEqual(t, e)
}

var cmpIgnoreElapsed = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Elapsed" }, cmp.Ignore())

func TestRebuildFromSeqAndSince(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js})
	start(t, r)

	a, b := authtest.NewUser(), authtest.NewUser()
	publishEvent(t, e.pub, events.Subject(events.UserCreated, a.ID), event(t, a))
	time.Sleep(20 * time.Millisecond)
	since := time.Now()
	time.Sleep(20 * time.Millisecond)
	seqB := publishEvent(t, e.pub, events.Subject(events.UserCreated, b.ID), event(t, b))
	a2 := a
	a2.Version, a2.Roles = 2, []string{events.RoleUser, events.RoleAdmin}
	last := publishEvent(t, e.pub, events.Subject(events.UserRoleChanged, a.ID), event(t, a2))
	eventually(t, "applied", func() bool { return applied(t, e.pool) == last })

	// A restored backup taken after a's creation: b is absent and a is at version 1. A row the
	// stream does not know stays: a partial rebuild starts from the live replica.
	restore := func() {
		exec(t, e.pool, `DELETE FROM replica_users WHERE id = $1`, b.ID)
		exec(t, e.pool, `UPDATE replica_users SET version = 1, roles = '{user}' WHERE id = $1`, a.ID)
	}
	kept := authtest.NewUser()
	exec(t, e.pool, `INSERT INTO replica_users (id, email, display_name, roles, status, version, stream_seq)
		VALUES ($1, 'k@example.com', 'k', '{user}', 'active', 1, 0)`, kept.ID)

	tests := []struct {
		name string
		opts replica.RebuildOptions
	}{
		{"from seq", replica.RebuildOptions{FromSeq: seqB}},
		{"since", replica.RebuildOptions{Since: since}},
	}
	for _, tt := range tests {
		restore()
		res, err := replica.Rebuild(context.Background(), e.pool, e.js, tt.opts)
		if err != nil {
			t.Fatalf("%s: Rebuild: %v", tt.name, err)
		}
		want := replica.RebuildResult{LastSeq: last, Read: 2, Applied: 2}
		if diff := cmp.Diff(want, res, cmpIgnoreElapsed); diff != "" {
			t.Errorf("%s: Rebuild (-want +got):\n%s", tt.name, diff)
		}
		got := rows(t, e.pool)
		for _, u := range []events.User{a2, b} {
			if diff := cmp.Diff(u, got[u.ID].User); diff != "" {
				t.Errorf("%s: user %s (-want +got):\n%s", tt.name, u.ID, diff)
			}
		}
		if _, ok := got[kept.ID]; !ok {
			t.Errorf("%s: a partial rebuild dropped a live row", tt.name)
		}
	}

	res, err := replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{FromSeq: last + 10})
	if err != nil {
		t.Fatalf("Rebuild past the end: %v", err)
	}
	if res.Read != 0 {
		t.Errorf("Rebuild past the end read %d, want 0", res.Read)
	}
}

func TestRebuildInterrupted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js})
	start(t, r)
	_, last := publishUsers(t, e, 50)
	eventually(t, "applied", func() bool { return applied(t, e.pool) == last })
	// The live replica differs from the stream, so that a swap would show.
	exec(t, e.pool, `UPDATE replica_users SET display_name = 'tampered'`)
	before := rows(t, e.pool)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var concurrent, verifying error
	_, err := replica.Rebuild(ctx, e.pool, e.js, replica.RebuildOptions{Progress: func(replica.Progress) {
		// While this one holds the lock, another rebuild is refused, and so is a verify.
		_, concurrent = replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{})
		_, verifying = replica.Verify(context.Background(), e.pool, e.js, nil)
		cancel() // Ctrl-C
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Rebuild = %v, want context.Canceled", err)
	}
	if !errors.Is(concurrent, replica.ErrRebuildRunning) {
		t.Errorf("concurrent Rebuild = %v, want ErrRebuildRunning", concurrent)
	}
	if !errors.Is(verifying, replica.ErrRebuildRunning) {
		t.Errorf("Verify during a rebuild = %v, want ErrRebuildRunning", verifying)
	}
	if diff := cmp.Diff(before, rows(t, e.pool)); diff != "" {
		t.Errorf("live replica changed by an interrupted rebuild (-before +after):\n%s", diff)
	}
	if tableExists(t, e.pool, replica.ShadowTable) {
		t.Errorf("%s left behind by an interrupted rebuild", replica.ShadowTable)
	}

	// The lock went with the interrupted rebuild's connection.
	if _, err := replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{}); err != nil {
		t.Fatalf("Rebuild after the interruption: %v", err)
	}
	verifyEqual(t, e)
}

func TestVerifyCatchesTampering(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js})
	start(t, r)
	users, last := publishUsers(t, e, 20)
	eventually(t, "applied", func() bool { return applied(t, e.pool) == last })
	verifyEqual(t, e)

	tampered, deleted := users[3], users[7]
	exec(t, e.pool, `UPDATE replica_users SET roles = '{user,admin}' WHERE id = $1`, tampered.ID)
	exec(t, e.pool, `DELETE FROM replica_users WHERE id = $1`, deleted.ID)
	extra := authtest.NewUser()
	exec(t, e.pool, `INSERT INTO replica_users (id, email, display_name, roles, status, version, stream_seq)
		VALUES ($1, 'x@example.com', 'x', '{user}', 'active', 1, 1)`, extra.ID)

	res, err := replica.Verify(context.Background(), e.pool, e.js, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	type diff struct {
		ID     uuid.UUID
		Kind   string
		Fields []string
	}
	var got []diff
	for _, d := range res.Differences {
		got = append(got, diff{d.UserID, d.Kind, d.Fields})
	}
	want := []diff{
		{tampered.ID, replica.Different, []string{"roles"}},
		{deleted.ID, replica.Missing, nil},
		{extra.ID, replica.Extra, nil},
	}
	sortDiffs := cmp.Transformer("sort", func(ds []diff) map[uuid.UUID]diff {
		m := map[uuid.UUID]diff{}
		for _, d := range ds {
			m[d.ID] = d
		}
		return m
	})
	if d := cmp.Diff(want, got, sortDiffs); d != "" {
		t.Errorf("Verify differences (-want +got):\n%s", d)
	}
	if res.Users != len(users) || res.LastSeq != last {
		t.Errorf("Verify users %d up to %d, want %d up to %d", res.Users, res.LastSeq, len(users), last)
	}
	for _, d := range res.Differences {
		if d.Kind == replica.Different && (d.Stream == nil || !cmp.Equal(*d.Stream, tampered)) {
			t.Errorf("stream state of %s = %+v, want %+v", d.UserID, d.Stream, tampered)
		}
	}
}

func TestDeadLettersRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: 200 * time.Millisecond})
	start(t, r)
	ctx := context.Background()

	// A constraint that an operator added by mistake refuses some events; they are dead-lettered.
	exec(t, e.pool, `ALTER TABLE replica_users ADD CONSTRAINT no_blocked CHECK (email NOT LIKE 'blocked%')`)
	blocked := authtest.NewUser()
	blocked.Email = "blocked@example.com"
	seqBlocked := publishEvent(t, e.pub, events.Subject(events.UserCreated, blocked.ID), event(t, blocked))
	// Garbage, then the user's next event with its full state: retrying resolves it as superseded.
	garbled := authtest.NewUser()
	seqGarbled := publishRaw(t, e.pub, events.Subject(events.UserCreated, garbled.ID), []byte("{not json"))
	// Garbage for which nothing comes later: it stays.
	stuck := uuid.New()
	seqStuck := publishRaw(t, e.pub, events.Subject(events.UserCreated, stuck), []byte("{not json"))
	eventually(t, "handled", func() bool { return applied(t, e.pool) == seqStuck })

	if _, err := r.User(ctx, blocked.ID, 1); !errors.Is(err, replica.ErrStale) {
		t.Fatalf("User(blocked) = %v, want ErrStale", err)
	}
	results, err := replica.Retry(ctx, e.pool, 0)
	if err != nil {
		t.Fatalf("Retry before the fix: %v", err)
	}
	for _, res := range results {
		if res.Outcome != replica.RetryFailed || res.Reason == "" {
			t.Errorf("Retry before the fix: seq %d = %s (%q), want failed with a reason", res.Seq, res.Outcome, res.Reason)
		}
	}
	if len(results) != 3 {
		t.Errorf("Retry before the fix: %d results, want 3", len(results))
	}

	// The fix.
	exec(t, e.pool, `ALTER TABLE replica_users DROP CONSTRAINT no_blocked`)
	garbled.Version = 2
	last := publishEvent(t, e.pub, events.Subject(events.UserRoleChanged, garbled.ID), event(t, garbled))
	eventually(t, "handled", func() bool { return applied(t, e.pool) == last })

	if _, err := replica.Retry(ctx, e.pool, last+1); !errors.Is(err, replica.ErrNoDeadLetter) {
		t.Errorf("Retry(unknown seq) = %v, want ErrNoDeadLetter", err)
	}
	results, err = replica.Retry(ctx, e.pool, seqBlocked)
	if err != nil {
		t.Fatalf("Retry(%d): %v", seqBlocked, err)
	}
	if want := []replica.RetryResult{{Seq: seqBlocked, UserID: &blocked.ID, Outcome: replica.RetryApplied}}; !cmp.Equal(want, results) {
		t.Errorf("Retry(%d) = %+v, want %+v", seqBlocked, results, want)
	}
	got, err := r.User(ctx, blocked.ID, 1)
	if err != nil {
		t.Fatalf("User(blocked) after the retry: %v", err)
	}
	if diff := cmp.Diff(blocked, got); diff != "" {
		t.Errorf("User(blocked) (-want +got):\n%s", diff)
	}

	results, err = replica.Retry(ctx, e.pool, 0)
	if err != nil {
		t.Fatalf("Retry: %v", err)
	}
	var outcomes []string
	for _, res := range results {
		outcomes = append(outcomes, fmt.Sprintf("%d %s", res.Seq, res.Outcome))
	}
	want := []string{fmt.Sprintf("%d superseded", seqGarbled), fmt.Sprintf("%d failed", seqStuck)}
	if diff := cmp.Diff(want, outcomes); diff != "" {
		t.Errorf("Retry outcomes (-want +got):\n%s", diff)
	}
	dls, err := replica.DeadLetters(ctx, e.pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].Seq != seqStuck {
		t.Errorf("dead letters after the retries = %+v, want only seq %d", dls, seqStuck)
	}
	if _, err := r.User(ctx, garbled.ID, 2); err != nil {
		t.Errorf("User(garbled) after its dead letter was superseded: %v", err)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js})
	_, last := publishUsers(t, e, 3)
	publishRaw(t, e.pub, events.Subject(events.UserCreated, uuid.New()), []byte("{not json"))
	ctx := context.Background()

	got, err := replica.Status(ctx, e.pool, e.js, "test")
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	// Run declares the durable consumer: before it, there is none.
	want := replica.StatusReport{StreamLastSeq: last + 1, Lag: last + 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Status before Run (-want +got):\n%s", diff)
	}

	start(t, r)
	eventually(t, "applied", func() bool { return applied(t, e.pool) == last+1 })
	eventually(t, "acked", func() bool { return consumerInfo(t, e.js, "test").NumAckPending == 0 })
	got, err = replica.Status(ctx, e.pool, e.js, "test")
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	want = replica.StatusReport{StreamLastSeq: last + 1, AppliedSeq: last + 1, Users: 3, DeadLetters: 1,
		Consumer: &replica.ConsumerReport{Name: "test"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
	if got, err := replica.Status(ctx, e.pool, e.js, "nobody"); err != nil || got.Consumer != nil {
		t.Errorf("Status(no such consumer) = %+v, %v; want no consumer, no error", got.Consumer, err)
	}
}
