package replica_test

import (
	"context"
	"slices"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/authmesh/events/replica"
)

// changeUser publishes u's next change, made by change, on the subject of typ, and returns u at
// its new version and the message's sequence.
func changeUser(t *testing.T, e env, typ events.Type, u events.User, change func(*events.User)) (events.User, uint64) {
	t.Helper()
	u.Version++
	change(&u)
	return u, publishEvent(t, e.pub, events.Subject(typ, u.ID), event(t, u))
}

// users returns the users of the live replica by id.
func users(t *testing.T, e env) map[uuid.UUID]events.User {
	t.Helper()
	out := map[uuid.UUID]events.User{}
	for id, r := range rows(t, e.pool) {
		out[id] = r.User
	}
	return out
}

// TestRebuildLastPerSubject: with versions that grow with the stream and applicable last
// messages, reading the last message of each subject rebuilds the same replica as the full read,
// from one message per subject, while the service serves and its consumer applies.
func TestRebuildLastPerSubject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: patience})
	start(t, r)
	// Histories over the three subjects of a user, with several messages on one subject.
	var last uint64
	subjects := 0
	for i := range 20 {
		u := authtest.NewUser()
		last = publishEvent(t, e.pub, events.Subject(events.UserCreated, u.ID), event(t, u))
		subjects++
		if i%2 == 0 {
			continue
		}
		for range 3 {
			u, _ = changeUser(t, e, events.UserRoleChanged, u, func(u *events.User) { u.Roles = append(u.Roles, "x") })
		}
		u, last = changeUser(t, e, events.UserStatusChanged, u, func(u *events.User) { u.Status = events.StatusDisabled })
		subjects += 2
	}
	eventually(t, "applied", func() bool { return applied(t, e.pool) == last })
	live := users(t, e)

	var during events.User
	res, err := replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{LastPerSubject: true, Progress: func(replica.Progress) {
		if during.ID != uuid.Nil {
			return
		}
		during = authtest.NewUser()
		seq := publishEvent(t, e.pub, events.Subject(events.UserCreated, during.ID), event(t, during))
		eventually(t, "applied during the rebuild", func() bool { return applied(t, e.pool) >= seq })
	}})
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	// The last messages of a user come in stream order, versions growing: each one applies.
	want := replica.RebuildResult{Full: true, LastPerSubject: true, LastSeq: last, Read: uint64(subjects), Applied: uint64(subjects), Merged: 1}
	if diff := cmp.Diff(want, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild (-want +got):\n%s", diff)
	}
	live[during.ID] = during
	if diff := cmp.Diff(live, users(t, e)); diff != "" {
		t.Errorf("replica after the rebuild (-live before +after):\n%s", diff)
	}
	verifyEqual(t, e)

	if _, err := replica.Rebuild(context.Background(), e.pool, e.js, replica.RebuildOptions{LastPerSubject: true, FromSeq: 3}); err == nil {
		t.Error("Rebuild with LastPerSubject and FromSeq succeeded, want an error")
	}
}

// TestRebuildWaysDiffer pins down, case by case, what each way of reading rebuilds where they
// differ (docs/operations.md says when an operator needs the full read).
func TestRebuildWaysDiffer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	// Versions that fall along the stream: account's database restored from an older backup,
	// then a change published again at a version already used.
	restored := authtest.NewUser()
	publishEvent(t, e.pub, events.Subject(events.UserCreated, restored.ID), event(t, restored))
	admin, _ := changeUser(t, e, events.UserRoleChanged, restored, func(u *events.User) { u.Roles = append(u.Roles, events.RoleAdmin) })
	again, _ := changeUser(t, e, events.UserRoleChanged, restored, func(u *events.User) { u.Roles = append(u.Roles, events.RoleModerator) })

	// A poison last message on a subject with a good message before it, and other subjects.
	poisoned := authtest.NewUser()
	publishEvent(t, e.pub, events.Subject(events.UserCreated, poisoned.ID), event(t, poisoned))
	p2, _ := changeUser(t, e, events.UserRoleChanged, poisoned, func(u *events.User) { u.Roles = append(u.Roles, events.RoleModerator) })
	publishRaw(t, e.pub, events.Subject(events.UserRoleChanged, poisoned.ID), []byte("{not json"))

	// A poison last message on the user's only subject.
	alone := authtest.NewUser()
	publishEvent(t, e.pub, events.Subject(events.UserCreated, alone.ID), event(t, alone))
	last := publishRaw(t, e.pub, events.Subject(events.UserCreated, alone.ID), []byte("{not json"))

	tests := []struct {
		name string
		opts replica.RebuildOptions
		want map[uuid.UUID]events.User
		res  replica.RebuildResult
	}{
		{"full", replica.RebuildOptions{},
			map[uuid.UUID]events.User{restored.ID: admin, poisoned.ID: p2, alone.ID: alone},
			replica.RebuildResult{Full: true, LastSeq: last, Read: 8, Applied: 5, Skipped: 3, Invalid: 2}},
		// The last of each subject: restored's version 2 published again, poisoned's created
		// (version 1), and nothing of alone.
		{"last per subject", replica.RebuildOptions{LastPerSubject: true},
			map[uuid.UUID]events.User{restored.ID: again, poisoned.ID: poisoned},
			replica.RebuildResult{Full: true, LastPerSubject: true, LastSeq: last, Read: 5, Applied: 3, Skipped: 2, Invalid: 2}},
	}
	for _, tt := range tests {
		res, err := replica.Rebuild(ctx, e.pool, e.js, tt.opts)
		if err != nil {
			t.Fatalf("%s: Rebuild: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.res, res, cmpIgnoreElapsed); diff != "" {
			t.Errorf("%s: Rebuild (-want +got):\n%s", tt.name, diff)
		}
		if diff := cmp.Diff(tt.want, users(t, e)); diff != "" {
			t.Errorf("%s: replica (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestRebuildRefusedRows: rows the database refuses (here a constraint an operator added) are
// found among the others, and their users fall back to the newest state the database takes, in
// stream order, as the consumer applies events one by one; the counts are those of one by one.
func TestRebuildRefusedRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	exec(t, e.pool, `ALTER TABLE replica_users ADD CONSTRAINT no_blocked CHECK (email NOT LIKE 'blocked%')`)
	block := func(u *events.User) { u.Email = "blocked-" + u.Email }

	want := map[uuid.UUID]events.User{}
	for range 40 {
		u := authtest.NewUser()
		publishEvent(t, e.pub, events.Subject(events.UserCreated, u.ID), event(t, u))
		want[u.ID] = u
	}
	// Refused at version 2: the full read keeps version 1.
	var blocked []events.User
	for range 3 {
		u := authtest.NewUser()
		publishEvent(t, e.pub, events.Subject(events.UserCreated, u.ID), event(t, u))
		changeUser(t, e, events.UserRoleChanged, u, block)
		blocked = append(blocked, u)
		want[u.ID] = u
	}
	// Refused at version 3, then an older version 2 arrives, which one by one applies.
	odd := authtest.NewUser()
	publishEvent(t, e.pub, events.Subject(events.UserCreated, odd.ID), event(t, odd))
	changeUser(t, e, events.UserStatusChanged, odd, func(u *events.User) { u.Version = 3; block(u) })
	odd2, last := changeUser(t, e, events.UserRoleChanged, odd, func(u *events.User) { u.Roles = append(u.Roles, events.RoleModerator) })
	want[odd.ID] = odd2

	res, err := replica.Rebuild(ctx, e.pool, e.js, replica.RebuildOptions{})
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	// 40 + 3×2 + 3 messages; refused: the 3 blocked version 2 and odd's version 3.
	wantRes := replica.RebuildResult{Full: true, LastSeq: last, Read: 49, Applied: 45, Skipped: 4, Invalid: 4}
	if diff := cmp.Diff(wantRes, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, users(t, e)); diff != "" {
		t.Errorf("replica (-want +got):\n%s", diff)
	}

	// Read by the last message per subject, the blocked users' lasts are their created (version
	// 1) and their refused version 2: they fall back to version 1 the same way.
	res, err = replica.Rebuild(ctx, e.pool, e.js, replica.RebuildOptions{LastPerSubject: true})
	if err != nil {
		t.Fatalf("Rebuild, last per subject: %v", err)
	}
	wantRes = replica.RebuildResult{Full: true, LastPerSubject: true, LastSeq: last, Read: 49, Applied: 45, Skipped: 4, Invalid: 4}
	if diff := cmp.Diff(wantRes, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild, last per subject (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, users(t, e)); diff != "" {
		t.Errorf("replica, last per subject (-want +got):\n%s", diff)
	}
}

// TestRebuildWritesSeveralTimes: a rebuild that holds more users than it may writes what it holds
// and reads on, with the same replica and counts in the end, refused rows and partial rebuilds
// included. It changes a package variable, so it does not run in parallel.
func TestRebuildWritesSeveralTimes(t *testing.T) {
	defer replica.SetMaxHeld(7)()
	e := newEnv(t)
	ctx := context.Background()
	exec(t, e.pool, `ALTER TABLE replica_users ADD CONSTRAINT no_blocked CHECK (email NOT LIKE 'blocked%')`)
	want := map[uuid.UUID]events.User{}
	var last uint64
	var all []events.User
	for range 30 {
		u := authtest.NewUser()
		publishEvent(t, e.pub, events.Subject(events.UserCreated, u.ID), event(t, u))
		all = append(all, u)
	}
	created := slices.Clone(all)
	// Changes spread over the stream, so that a user's history spans several writes.
	for round := range 3 {
		for i, u := range all {
			switch {
			case i == 3 && round == 1:
				_, last = changeUser(t, e, events.UserRoleChanged, u, func(u *events.User) { u.Email = "blocked-" + u.Email })
				continue // refused: the user stays at its previous version
			case i == 5 && round == 2:
				last = publishRaw(t, e.pub, events.Subject(events.UserRoleChanged, u.ID), []byte("{not json"))
				continue
			case i == 3 && round == 2:
				continue
			}
			all[i], last = changeUser(t, e, events.UserRoleChanged, u, func(u *events.User) { u.DisplayName += "+" })
		}
	}
	for _, u := range all {
		want[u.ID] = u
	}

	res, err := replica.Rebuild(ctx, e.pool, e.js, replica.RebuildOptions{})
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	// 30 created, 3 rounds of 30 changes; one refused, one garbage.
	wantRes := replica.RebuildResult{Full: true, LastSeq: last, Read: 30 + 89, Applied: 30 + 87, Skipped: 2, Invalid: 2}
	if diff := cmp.Diff(wantRes, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, users(t, e)); diff != "" {
		t.Errorf("replica (-want +got):\n%s", diff)
	}

	// A partial rebuild over a replica rewound to the created states re-applies every change.
	exec(t, e.pool, `UPDATE replica_users SET version = 1, display_name = 'rewound'`)
	res, err = replica.Rebuild(ctx, e.pool, e.js, replica.RebuildOptions{FromSeq: 31})
	if err != nil {
		t.Fatalf("Rebuild from seq 31: %v", err)
	}
	wantRes = replica.RebuildResult{LastSeq: last, Read: 89, Applied: 87, Skipped: 2, Invalid: 2}
	if diff := cmp.Diff(wantRes, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild from seq 31 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, users(t, e)); diff != "" {
		t.Errorf("replica after the partial rebuild (-want +got):\n%s", diff)
	}

	// By the last message per subject: the created states, then the last role changes, of which
	// the refused one and the garbage leave their users at their created states.
	res, err = replica.Rebuild(ctx, e.pool, e.js, replica.RebuildOptions{LastPerSubject: true})
	if err != nil {
		t.Fatalf("Rebuild, last per subject: %v", err)
	}
	wantRes = replica.RebuildResult{Full: true, LastPerSubject: true, LastSeq: last, Read: 60, Applied: 58, Skipped: 2, Invalid: 2}
	if diff := cmp.Diff(wantRes, res, cmpIgnoreElapsed); diff != "" {
		t.Errorf("Rebuild, last per subject (-want +got):\n%s", diff)
	}
	want[created[3].ID], want[created[5].ID] = created[3], created[5]
	if diff := cmp.Diff(want, users(t, e)); diff != "" {
		t.Errorf("replica after the rebuild by the last message per subject (-want +got):\n%s", diff)
	}
}
