// Package checker computes the figures of a reliability run (lost, lost-middle, unknown,
// dup-in-stream, applied-twice, unexpected, divergence; docs/reliability.md defines them) from its
// history, in the manner of Jepsen's set-based queue checker: what the clients attempted and what
// they were told, set against what the stream holds and what account and each replica hold after
// quiescence. It judges histories and nothing else, so its tests can feed it every kind of
// failure and see each counted: a checker that cannot fail proves nothing.
//
// A change is identified by its user and the version it produced, the identity account gives
// every change (a user's version grows by one with each). A client knows that identity when it
// was answered (201 or 200 carry the user and its version); when the outcome is unknown (a
// timeout, a cut connection), it knows only which user (or, for a registration, which email) it
// asked about, and the change may or may not have happened.
package checker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// Op is the kind of an attempt.
type Op string

// Ops of account that make events, and the rest.
const (
	OpRegister Op = "register"   // POST /v1/users: user.created
	OpRoles    Op = "set_roles"  // PUT /v1/users/{id}/roles: user.role_changed
	OpStatus   Op = "set_status" // PUT /v1/users/{id}/status: user.status_changed
	OpOther    Op = "other"      // an attempt that makes no event (reads, orders)
)

// Outcome is what the client was told.
type Outcome string

// Outcomes of an attempt.
const (
	// Acked: the change was made (201/200); Attempt.User and Attempt.Version say which.
	Acked Outcome = "acked"
	// Failed: the change was certainly not made (a 4xx, or a 503 answered before any write).
	Failed Outcome = "failed"
	// Unknown: the client cannot tell (a timeout, a cut connection, a 500).
	Unknown Outcome = "unknown"
)

// Attempt is one request of a client and what it was told.
type Attempt struct {
	Op      Op
	Outcome Outcome
	// User is the user the request was about; for a registration, the user created (known only
	// when acked).
	User uuid.UUID
	// Email is the email a registration asked for (how an unknown registration is recognised).
	Email string
	// Version is the user's version in the answer, for an acked change.
	Version int64
}

// Event is a message read back from the stream.
type Event struct {
	Seq uint64
	events.Event
}

// State is what a store holds for a user: what authorization depends on.
type State struct {
	Roles   []string
	Status  string
	Version int64
}

func (s State) String() string {
	return fmt.Sprintf("v%d %s [%s]", s.Version, s.Status, strings.Join(s.Roles, ","))
}

// Equal reports whether two states are the same (roles in any order).
func Equal(a, b State) bool { return a.equal(b) }

func (s State) equal(o State) bool {
	return s.Version == o.Version && s.Status == o.Status && slices.Equal(sorted(s.Roles), sorted(o.Roles))
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// History is everything a run observed.
type History struct {
	// Initial are the users that existed before the run (the bootstrap admin), at their version
	// then: their changes up to it are in the stream without any attempt.
	Initial  map[uuid.UUID]int64
	Attempts []Attempt
	// Stream is the whole stream, read from sequence 1.
	Stream []Event
	// Account is account's users after quiescence, by id.
	Account map[uuid.UUID]State
	// Replicas are the replicas after quiescence (by name: "blog", "shop"), by user id.
	Replicas map[string]map[uuid.UUID]State
	// Applied is, per replica, how many events changed its rows during the run (the sum of
	// replica_events_applied_total over its instances); absent when not measured.
	Applied map[string]int
	// AppliedLog is, per replica, every committed change of its rows during the run, in order
	// (the rig's audit trigger records them, whichever instance made them); absent when not
	// recorded. A change that appears twice was applied twice.
	AppliedLog map[string][]Change
}

// Change identifies a change of a user: the version it produced.
type Change struct {
	User    uuid.UUID
	Version int64
}

// Figures are the figures a history gives.
type Figures struct {
	Attempts int // attempts that make events
	Acked    int
	// Lost: acked changes the stream does not hold.
	Lost int
	// LostMiddle: lost changes of a user of whom a later version is in the stream (a hole).
	LostMiddle int
	// NotApplied: per replica, acked changes it does not reflect (its version of the user is
	// lower, or it lacks the user).
	NotApplied map[string]int
	// Unknown: attempts of unknown outcome whose change is not in the stream (allowed, counted).
	Unknown int
	// DupInStream: stream messages beyond the first of each event id.
	DupInStream int
	// AppliedTwice: per replica, row changes beyond one per distinct change of the stream.
	AppliedTwice map[string]int
	// Unexpected: changes in the stream that no attempt made (phantoms), or a second event id for
	// one user version.
	Unexpected int
	// Divergence: per replica, users whose state differs from account's.
	Divergence map[string]int
	// Problems describes each counted failure, for the report (at most a few of each kind).
	Problems []string
}

// OK reports whether every figure that must be zero is.
func (f Figures) OK() bool {
	if f.Lost > 0 || f.LostMiddle > 0 || f.Unexpected > 0 {
		return false
	}
	for _, m := range []map[string]int{f.NotApplied, f.AppliedTwice, f.Divergence} {
		for _, n := range m {
			if n > 0 {
				return false
			}
		}
	}
	return true
}

// key identifies a change.
type key struct {
	user    uuid.UUID
	version int64
}

// maxProblems bounds the descriptions kept per kind of failure.
const maxProblems = 5

// Check computes the figures of h.
func Check(h History) (Figures, error) {
	f := Figures{NotApplied: map[string]int{}, AppliedTwice: map[string]int{}, Divergence: map[string]int{}}
	shown := map[string]int{}
	problem := func(kind, format string, args ...any) {
		if shown[kind] < maxProblems {
			f.Problems = append(f.Problems, kind+": "+fmt.Sprintf(format, args...))
		}
		shown[kind]++
	}

	// The stream: each change by its identity, each event id by its copies.
	ids := map[uuid.UUID]int{}       // event id → copies
	inStream := map[key]uuid.UUID{}  // change → its event id
	latest := map[uuid.UUID]int64{}  // user → highest version in the stream
	emails := map[string]uuid.UUID{} // email of a user.created → user
	for _, e := range h.Stream {
		ids[e.ID]++
		if ids[e.ID] > 1 {
			f.DupInStream++
			continue
		}
		k := key{e.User.ID, e.User.Version}
		if other, ok := inStream[k]; ok {
			f.Unexpected++
			problem("unexpected", "user %s version %d carried by events %s and %s (seq %d)", k.user, k.version, other, e.ID, e.Seq)
			continue
		}
		inStream[k] = e.ID
		latest[k.user] = max(latest[k.user], k.version)
		if e.Type == events.UserCreated {
			emails[strings.ToLower(e.User.Email)] = e.User.ID
		}
	}

	// The attempts: acked changes must be in the stream; the others may explain what else is.
	claimed := map[key]bool{}
	for id, v := range h.Initial {
		for n := int64(1); n <= v; n++ {
			claimed[key{id, n}] = true
		}
	}
	unknownChanges := map[uuid.UUID]int{} // user → changes of unknown outcome
	var unknownRegistrations []string
	for i, a := range h.Attempts {
		switch a.Op {
		case OpOther:
			continue
		case OpRegister, OpRoles, OpStatus:
		default:
			return Figures{}, fmt.Errorf("attempt %d: unknown op %q", i, a.Op)
		}
		f.Attempts++
		switch a.Outcome {
		case Acked:
			f.Acked++
			if a.User == uuid.Nil || a.Version < 1 {
				return Figures{}, fmt.Errorf("attempt %d: acked without a user and version", i)
			}
			k := key{a.User, a.Version}
			claimed[k] = true
			if _, ok := inStream[k]; !ok {
				f.Lost++
				if latest[k.user] > k.version {
					f.LostMiddle++
					problem("lost-middle", "user %s version %d (acked) missing while version %d is in the stream", k.user, k.version, latest[k.user])
				} else {
					problem("lost", "user %s version %d (acked) is not in the stream", k.user, k.version)
				}
			}
			for name, rep := range h.Replicas {
				if s, ok := rep[a.User]; !ok || s.Version < a.Version {
					f.NotApplied[name]++
					problem("not-applied", "%s: user %s version %d (acked) not reflected (holds %v)", name, a.User, a.Version, rep[a.User])
				}
			}
		case Unknown:
			if a.Op == OpRegister {
				unknownRegistrations = append(unknownRegistrations, strings.ToLower(a.Email))
			} else {
				unknownChanges[a.User]++
			}
		case Failed:
		default:
			return Figures{}, fmt.Errorf("attempt %d: unknown outcome %q", i, a.Outcome)
		}
	}

	// What the stream holds beyond the acked changes must be explained by an unknown attempt:
	// a registration by its email, a change by its user (one change per attempt).
	explainedRegs := map[string]bool{}
	for _, email := range unknownRegistrations {
		if id, ok := emails[email]; ok && !explainedRegs[email] {
			explainedRegs[email] = true
			claimed[key{id, 1}] = true
		} else {
			f.Unknown++
		}
	}
	var extra []key
	for k := range inStream {
		if !claimed[k] {
			extra = append(extra, k)
		}
	}
	slices.SortFunc(extra, func(a, b key) int {
		if c := strings.Compare(a.user.String(), b.user.String()); c != 0 {
			return c
		}
		return int(a.version - b.version)
	})
	for _, k := range extra {
		if k.version > 1 && unknownChanges[k.user] > 0 {
			unknownChanges[k.user]--
			continue
		}
		f.Unexpected++
		problem("unexpected", "user %s version %d is in the stream (event %s) but no attempt made it", k.user, k.version, inStream[k])
	}
	for _, n := range unknownChanges {
		f.Unknown += n
	}

	// Each replica against account, and against the stream's count of changes.
	for name, rep := range h.Replicas {
		for id, want := range h.Account {
			got, ok := rep[id]
			if !ok || !want.equal(got) {
				f.Divergence[name]++
				problem("divergence", "%s: user %s is %v, account has %v", name, id, got, want)
			}
		}
		for id := range rep {
			if _, ok := h.Account[id]; !ok {
				f.Divergence[name]++
				problem("divergence", "%s: user %s is unknown to account", name, id)
			}
		}
		seen := map[Change]bool{}
		for _, c := range h.AppliedLog[name] {
			if seen[c] {
				f.AppliedTwice[name]++
				problem("applied-twice", "%s applied user %s version %d more than once", name, c.User, c.Version)
			}
			seen[c] = true
		}
		if applied, ok := h.Applied[name]; ok && applied > len(inStream) {
			f.AppliedTwice[name] = applied - len(inStream)
			problem("applied-twice", "%s changed its rows %d times for %d distinct changes", name, applied, len(inStream))
		}
	}
	return f, nil
}
