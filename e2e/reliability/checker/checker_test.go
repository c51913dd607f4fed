package checker

import (
	"strings"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// run is a history under construction: users registered and changed, their events in the stream,
// and account and two replicas that hold the final states, all agreeing until a test breaks
// something.
type run struct {
	t *testing.T
	h History
}

func newRun(t *testing.T) *run {
	return &run{t: t, h: History{
		Account:  map[uuid.UUID]State{},
		Replicas: map[string]map[uuid.UUID]State{"blog": {}, "shop": {}},
	}}
}

// publish appends an event of u to the stream and returns it.
func (r *run) publish(typ events.Type, u events.User) Event {
	r.t.Helper()
	e, err := events.NewEvent(typ, u, time.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	ev := Event{Seq: uint64(len(r.h.Stream) + 1), Event: e}
	r.h.Stream = append(r.h.Stream, ev)
	return ev
}

// settle makes account and both replicas hold u.
func (r *run) settle(u events.User) {
	s := State{Roles: u.Roles, Status: u.Status, Version: u.Version}
	r.h.Account[u.ID] = s
	for _, rep := range r.h.Replicas {
		rep[u.ID] = s
	}
}

// register is an acked registration, published and settled.
func (r *run) register() events.User {
	u := events.User{ID: uuid.New(), Email: uuid.NewString() + "@example.com", DisplayName: "U",
		Roles: []string{events.RoleUser}, Status: events.StatusActive, Version: 1}
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpRegister, Outcome: Acked, User: u.ID, Email: u.Email, Version: 1})
	r.publish(events.UserCreated, u)
	r.settle(u)
	return u
}

// grant is an acked role change of u, published and settled.
func (r *run) grant(u events.User, role string) events.User {
	u.Roles, u.Version = append(append([]string(nil), u.Roles...), role), u.Version+1
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpRoles, Outcome: Acked, User: u.ID, Version: u.Version})
	r.publish(events.UserRoleChanged, u)
	r.settle(u)
	return u
}

func (r *run) check() Figures {
	r.t.Helper()
	f, err := Check(r.h)
	if err != nil {
		r.t.Fatalf("Check: %v", err)
	}
	return f
}

// base is a clean run: three users, some changed, reads in between.
func base(t *testing.T) (*run, []events.User) {
	r := newRun(t)
	a, b, c := r.register(), r.register(), r.register()
	a = r.grant(a, events.RoleModerator)
	a = r.grant(a, events.RoleAdmin)
	b = r.grant(b, events.RoleModerator)
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpOther, Outcome: Acked})
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpRoles, Outcome: Failed, User: c.ID})
	return r, []events.User{a, b, c}
}

func TestCleanRun(t *testing.T) {
	r, _ := base(t)
	r.h.Applied = map[string]int{"blog": 6, "shop": 5}
	f := r.check()
	if !f.OK() || f.Lost+f.LostMiddle+f.Unknown+f.DupInStream+f.Unexpected != 0 || len(f.Problems) > 0 {
		t.Fatalf("a clean run: %+v", f)
	}
	if f.Attempts != 7 || f.Acked != 6 {
		t.Errorf("attempts %d acked %d, want 7 and 6", f.Attempts, f.Acked)
	}
}

// want checks the figures a broken run must give, and that it is not OK when it must not be.
func want(t *testing.T, f Figures, ok bool, got, wantN int, what string) {
	t.Helper()
	if got != wantN {
		t.Errorf("%s = %d, want %d (figures %+v)", what, got, wantN, f)
	}
	if f.OK() != ok {
		t.Errorf("OK() = %v, want %v (problems %v)", f.OK(), ok, f.Problems)
	}
	if !ok && len(f.Problems) == 0 {
		t.Error("a failed run describes no problem")
	}
}

// The last change of a user is acked but not in the stream: lost, not a hole.
func TestLostEvent(t *testing.T) {
	r, _ := base(t)
	r.h.Stream = r.h.Stream[:len(r.h.Stream)-1] // b's grant
	f := r.check()
	want(t, f, false, f.Lost, 1, "lost")
	want(t, f, false, f.LostMiddle, 0, "lost-middle")
}

// A change in the middle of a user's history is missing while a later one is there: a hole.
func TestHoleIsLostMiddle(t *testing.T) {
	r, _ := base(t)
	// a's first grant (version 2) is the 4th event; its version 3 follows.
	r.h.Stream = append(r.h.Stream[:3:3], r.h.Stream[4:]...)
	f := r.check()
	want(t, f, false, f.Lost, 1, "lost")
	want(t, f, false, f.LostMiddle, 1, "lost-middle")
	if !strings.Contains(strings.Join(f.Problems, "\n"), "lost-middle") {
		t.Errorf("problems %v name no lost-middle", f.Problems)
	}
}

// The same event stored twice (a republish past the de-duplication window) is counted, and is not
// a failure by itself.
func TestDuplicateInStream(t *testing.T) {
	r, _ := base(t)
	dup := r.h.Stream[3]
	dup.Seq = uint64(len(r.h.Stream) + 1)
	r.h.Stream = append(r.h.Stream, dup)
	f := r.check()
	want(t, f, true, f.DupInStream, 1, "dup-in-stream")
	want(t, f, true, f.Unexpected, 0, "unexpected")
}

// A change nobody attempted (a phantom) is unexpected.
func TestPhantom(t *testing.T) {
	r, users := base(t)
	c := users[2]
	c.Roles, c.Version = []string{events.RoleUser, events.RoleAdmin}, 2
	r.publish(events.UserRoleChanged, c)
	r.settle(c)
	f := r.check()
	want(t, f, false, f.Unexpected, 1, "unexpected")
}

// Two different events for one user version: one of them is a phantom.
func TestTwoEventsForOneVersion(t *testing.T) {
	r, users := base(t)
	r.publish(events.UserRoleChanged, users[1]) // b at its current version, a new event id
	f := r.check()
	want(t, f, false, f.Unexpected, 1, "unexpected")
}

// A change of unknown outcome that happened explains its event; one that did not is unknown.
func TestUnknownOutcomes(t *testing.T) {
	r, users := base(t)
	c := users[2]
	c.Status, c.Version = events.StatusDisabled, 2
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpStatus, Outcome: Unknown, User: c.ID}) // happened
	r.publish(events.UserStatusChanged, c)
	r.settle(c)
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpStatus, Outcome: Unknown, User: users[1].ID}) // did not
	u := events.User{ID: uuid.New(), Email: "Late@Example.com", DisplayName: "L", Roles: []string{events.RoleUser},
		Status: events.StatusActive, Version: 1}
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpRegister, Outcome: Unknown, Email: "late@example.com"}) // happened
	r.publish(events.UserCreated, u)
	r.settle(u)
	r.h.Attempts = append(r.h.Attempts, Attempt{Op: OpRegister, Outcome: Unknown, Email: "never@example.com"}) // did not
	f := r.check()
	want(t, f, true, f.Unknown, 2, "unknown")
	want(t, f, true, f.Unexpected, 0, "unexpected")
}

// A replica that differs from account after quiescence diverges, and one that lacks an acked
// change has not applied it.
func TestDivergenceAndNotApplied(t *testing.T) {
	r, users := base(t)
	a := users[0]
	r.h.Replicas["shop"][a.ID] = State{Roles: []string{events.RoleUser, events.RoleModerator}, Status: events.StatusActive, Version: 2}
	delete(r.h.Replicas["blog"], users[2].ID)
	f := r.check()
	want(t, f, false, f.Divergence["shop"], 1, "divergence shop")
	want(t, f, false, f.Divergence["blog"], 1, "divergence blog")
	want(t, f, false, f.NotApplied["shop"], 1, "not applied shop")
	want(t, f, false, f.NotApplied["blog"], 1, "not applied blog")
}

// A replica holding a user account does not know diverges too; a replica whose roles are the
// same in another order does not.
func TestDivergenceDetails(t *testing.T) {
	r, users := base(t)
	r.h.Replicas["blog"][uuid.New()] = State{Roles: []string{events.RoleAdmin}, Status: events.StatusActive, Version: 1}
	s := r.h.Replicas["shop"][users[0].ID]
	s.Roles = []string{s.Roles[2], s.Roles[1], s.Roles[0]}
	r.h.Replicas["shop"][users[0].ID] = s
	f := r.check()
	want(t, f, false, f.Divergence["blog"], 1, "divergence blog")
	if f.Divergence["shop"] != 0 {
		t.Errorf("roles in another order counted as divergence: %v", f.Problems)
	}
}

// More row changes than distinct changes in the stream: something was applied twice.
func TestAppliedTwice(t *testing.T) {
	r, _ := base(t)
	r.h.Applied = map[string]int{"blog": 7, "shop": 6}
	f := r.check()
	want(t, f, false, f.AppliedTwice["blog"], 1, "applied-twice blog")
	want(t, f, false, f.AppliedTwice["shop"], 0, "applied-twice shop")
}

// The audit log of a replica names one change twice: it was applied twice; a log of distinct
// changes is no failure.
func TestAppliedTwiceInLog(t *testing.T) {
	r, users := base(t)
	one := Change{User: users[0].ID, Version: 1}
	two := Change{User: users[0].ID, Version: 2}
	r.h.AppliedLog = map[string][]Change{"blog": {one, two, one}, "shop": {one, two}}
	f := r.check()
	want(t, f, false, f.AppliedTwice["blog"], 1, "applied-twice blog")
	want(t, f, false, f.AppliedTwice["shop"], 0, "applied-twice shop")
}

// A user that existed before the run (the bootstrap admin) is no phantom up to its version then;
// a later change of it that no attempt made is.
func TestInitialUsers(t *testing.T) {
	r, _ := base(t)
	admin := uuid.New()
	r.h.Stream = append(r.h.Stream,
		Event{Seq: 100, Event: events.Event{ID: uuid.New(), Type: events.UserCreated, User: events.User{ID: admin, Email: "admin@example.com", Roles: []string{"admin"}, Status: events.StatusActive, Version: 1}}})
	f := r.check()
	want(t, f, false, f.Unexpected, 1, "unexpected (an admin nobody said existed)")
	r.h.Initial = map[uuid.UUID]int64{admin: 1}
	if f := r.check(); f.Unexpected != 0 {
		t.Errorf("unexpected = %d with the admin initial: %v", f.Unexpected, f.Problems)
	}
}

func TestMalformedHistory(t *testing.T) {
	for name, a := range map[string]Attempt{
		"unknown op":            {Op: "delete", Outcome: Acked},
		"unknown outcome":       {Op: OpRoles, Outcome: "maybe"},
		"acked without user":    {Op: OpRoles, Outcome: Acked, Version: 2},
		"acked without version": {Op: OpRoles, Outcome: Acked, User: uuid.New()},
	} {
		if _, err := Check(History{Attempts: []Attempt{a}}); err == nil {
			t.Errorf("%s: Check accepted %+v", name, a)
		}
	}
}
