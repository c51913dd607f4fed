// Package restore finds out whether account's database is behind the USERS stream, and brings
// it back above the stream.
//
// The database is behind when the stream holds versions of users that the database never made:
// after a restore from a backup older than the stream, a user at version 5 in the stream may be
// at version 3 in the database, and users registered after the backup are unknown to it. Were
// account to go on, its next change of that user would publish a different version 4, which
// every replica ignores as stale (they apply an event only if its version is newer), and the
// replicas would differ from account for good.
//
// Check looks at the stream's newest message only, cheaply enough for every start; Compare
// compares every user of the stream with the database; Reconcile repairs: every user the
// database is behind for gets a version above the stream's, keeping the database's state,
// through the outbox like every change (postgres.Store.ReconcileUser).
package restore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrBehind is wrapped by the error of Check when the database is behind the stream.
var ErrBehind = errors.New("the database is behind the stream " + events.StreamName)

// Check compares the stream's newest message with the database, with two requests to NATS (the
// stream's info, the message) and at most two queries. The database is behind when the message's
// event is not in its outbox and the user is unknown to it, or at a lower version, or at the same
// version in another state (account.User.Behind); the error then wraps ErrBehind and says what
// was found. An event of the outbox, or a user the database holds at a higher version (its events
// are still to be published, or Reconcile bumped it), is fine, and so are an empty or missing
// stream. A message it cannot decode is no evidence either way: Check returns nil and says so in
// warning.
func Check(ctx context.Context, js jetstream.JetStream, users *postgres.Store) (warning string, err error) {
	msg, err := newest(ctx, js)
	if err != nil || msg == nil {
		return "", err
	}
	e, ok := parse(msg.Subject, msg.Data)
	id, idErr := uuid.Parse(msg.Header.Get(jetstream.MsgIDHeader))
	if idErr != nil && ok {
		id = e.ID
	}
	if id != uuid.Nil {
		known, err := users.HasEvent(ctx, id)
		if err != nil || known {
			return "", err
		}
	}
	if !ok {
		return fmt.Sprintf("the newest message of stream %s (sequence %d, subject %s) is not a valid event: "+
			"not compared with the database", events.StreamName, msg.Sequence, msg.Subject), nil
	}
	s := e.User
	u, err := users.User(ctx, s.ID)
	switch {
	case errors.Is(err, account.ErrNotFound):
		return "", fmt.Errorf("%w: its newest event %s (sequence %d) is about user %s at version %d, whom the database does not know",
			ErrBehind, id, msg.Sequence, s.ID, s.Version)
	case err != nil:
		return "", err
	case u.Behind(s, false):
		state := ""
		if s.Version == u.Version {
			state = " in another state"
		}
		return "", fmt.Errorf("%w: its newest event %s (sequence %d) has user %s at version %d, which the database has at version %d%s",
			ErrBehind, id, msg.Sequence, s.ID, s.Version, u.Version, state)
	}
	return "", nil
}

// newest returns the stream's last message, or nil when the stream is missing or empty.
func newest(ctx context.Context, js jetstream.JetStream) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, events.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	last := s.CachedInfo().State.LastSeq
	if last == 0 {
		return nil, nil
	}
	msg, err := s.GetMsg(ctx, last)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// An operator deleted the last message: the newest one left is the last on any subject.
		msg, err = s.GetLastMsgForSubject(ctx, events.StreamSubjects)
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: get the newest message: %w", events.StreamName, err)
	}
	return msg, nil
}

// Comparison is what Compare found.
type Comparison struct {
	Users   int // users the stream holds
	Behind  int // users the database is behind the stream for, Unknown included
	Unknown int // users of the stream that the database does not have
}

// Compare compares every user of the stream with db, the database's users.
func Compare(st Stream, db map[uuid.UUID]account.User) Comparison {
	c := Comparison{Users: len(st.Users)}
	for id, su := range st.Users {
		u, ok := db[id]
		switch {
		case !ok:
			c.Behind++
			c.Unknown++
		case u.Behind(su.User, su.Conflict):
			c.Behind++
		}
	}
	return c
}

// Result is what Reconcile did.
type Result struct {
	Bumped   int // users whose version was set above the stream's
	Restored int // users unknown to the database, inserted disabled
	// Changes lists the users bumped or restored, in the order of their ids.
	Changes []Change
	// EmailTaken lists the users unknown to the database that were not inserted, as another user
	// of the database has their email.
	EmailTaken []uuid.UUID
}

// Change is a user that Reconcile bumped or restored.
type Change struct {
	Done   postgres.Reconciled // postgres.Bumped or postgres.RestoredDisabled
	Stream events.User         // the newest state the stream held
	User   account.User        // the database's user now
}

// Reconcile brings the database above the stream for every user of st it is behind for
// (postgres.Store.ReconcileUser; a user the database lacks gets the password hash
// unusableHash), in the order of their ids, one transaction each. Users of the database that the
// stream does not know, or holds at lower versions, are left alone: their events are still to be
// published. Running it again changes nothing. It reports what it did, also when it stops on an
// error.
func Reconcile(ctx context.Context, st Stream, users *postgres.Store, unusableHash string) (Result, error) {
	var res Result
	db, err := users.AllUsers(ctx)
	if err != nil {
		return res, err
	}
	ids := make([]uuid.UUID, 0, len(st.Users))
	for id, su := range st.Users {
		// The lock in ReconcileUser decides; this only spares a transaction per user in order.
		if u, ok := db[id]; !ok || u.Behind(su.User, su.Conflict) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	for _, id := range ids {
		done, u, err := users.ReconcileUser(ctx, st.Users[id], unusableHash)
		switch {
		case errors.Is(err, account.ErrEmailTaken):
			res.EmailTaken = append(res.EmailTaken, id)
			continue
		case err != nil:
			return res, err
		case done == postgres.Bumped:
			res.Bumped++
		case done == postgres.RestoredDisabled:
			res.Restored++
		default:
			continue
		}
		res.Changes = append(res.Changes, Change{Done: done, Stream: st.Users[id].User, User: u})
	}
	return res, nil
}
