package replica

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// usersTable is the table of replicated users. A rebuild fills a copy of it (applyTo) and swaps
// the copy in by renaming it.
const usersTable = "replica_users"

// notifyChannel is the channel on which every apply announces the ids of the users it changed.
const notifyChannel = "replica_users"

// notifyAll is the payload that wakes every waiter, sent when a rebuild swaps the table in.
const notifyAll = "*"

// newerVersionWins ends every INSERT of user rows, into usersTable or a copy of it aliased u: a
// row is replaced only by a newer version of the user. This gate is what makes duplicates,
// redeliveries, reordering and replays converge on the highest version, so the live apply, a
// rebuild's batches and its merge at the swap share this one definition.
const newerVersionWins = `ON CONFLICT (id) DO UPDATE SET
			email = EXCLUDED.email,
			display_name = EXCLUDED.display_name,
			roles = EXCLUDED.roles,
			status = EXCLUDED.status,
			version = EXCLUDED.version,
			stream_seq = EXCLUDED.stream_seq,
			updated_at = EXCLUDED.updated_at
		WHERE u.version < EXCLUDED.version`

// querier runs SQL: a pgx.Tx, a *pgx.Conn or a *pgxpool.Pool.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// apply writes the user state that e carries into the replica, if e's version is newer than the
// row's, recording seq as the row's stream sequence. It reports whether the row changed: false
// means the event was a duplicate or older than what the replica holds (skipped). A change sends
// a NOTIFY with the user id, delivered when the transaction of q commits. e must be valid.
func apply(ctx context.Context, q querier, seq uint64, e events.Event) (bool, error) {
	return applyTo(ctx, q, usersTable, seq, e)
}

// upsert is the statement of applyTo, with %s for the table: the table is named once, so the
// statement works on any copy of it.
const upsert = `WITH changed AS (
		INSERT INTO %s AS u (id, email, display_name, roles, status, version, stream_seq, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now())
		` + newerVersionWins + `
		RETURNING id)
	SELECT id, pg_notify('` + notifyChannel + `', id::text) FROM changed`

// applyTo is apply into table, a table shaped like usersTable (the copy a rebuild fills).
func applyTo(ctx context.Context, q querier, table string, seq uint64, e events.Event) (bool, error) {
	return applied(e, seq, q.QueryRow(ctx, upsertInto(table), upsertArgs(seq, e)...))
}

// queueApply queues on b the apply of e into usersTable; once b has run, *changed tells whether
// the row changed, as apply's answer does. It is apply for a batch sent in one round trip.
func queueApply(b *pgx.Batch, seq uint64, e events.Event, changed *bool) {
	b.Queue(upsertInto(usersTable), upsertArgs(seq, e)...).QueryRow(func(row pgx.Row) error {
		var err error
		*changed, err = applied(e, seq, row)
		return err
	})
}

func upsertInto(table string) string { return fmt.Sprintf(upsert, pgx.Identifier{table}.Sanitize()) }

func upsertArgs(seq uint64, e events.Event) []any {
	u := e.User
	return []any{u.ID, u.Email, u.DisplayName, u.Roles, u.Status, u.Version, int64(seq)}
}

// applied reads the answer of the upsert of e: whether the row changed.
func applied(e events.Event, seq uint64, row pgx.Row) (bool, error) {
	var id uuid.UUID
	err := row.Scan(&id, nil)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("apply event %s (seq %d) to user %s: %w", e.ID, seq, e.User.ID, err)
	}
	return true, nil
}

// DeadLetter is a message of the stream that could not be applied.
type DeadLetter struct {
	Seq     uint64     // stream sequence
	Subject string     // subject it was published on
	UserID  *uuid.UUID // user named by the subject; nil when the subject names none
	Data    []byte     // payload as received
	Reason  string     // why it could not be applied
	At      time.Time  // when it was recorded (set by addDeadLetter)
}

// addDeadLetterSQL records a dead letter (again, if its sequence is already recorded: the reason
// is replaced) and wakes the callers of User waiting for its user, who then get ErrStale.
const addDeadLetterSQL = `WITH added AS (
		INSERT INTO replica_dead_letters (stream_seq, subject, user_id, data, reason)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (stream_seq) DO UPDATE SET reason = EXCLUDED.reason, created_at = now()
		RETURNING user_id)
	SELECT pg_notify('` + notifyChannel + `', user_id::text) FROM added WHERE user_id IS NOT NULL`

// addDeadLetter records d as addDeadLetterSQL says.
func addDeadLetter(ctx context.Context, q querier, d DeadLetter) error {
	if _, err := q.Exec(ctx, addDeadLetterSQL, d.args()...); err != nil {
		return fmt.Errorf("add dead letter seq %d: %w", d.Seq, err)
	}
	return nil
}

// queueDeadLetter queues on b what addDeadLetter does.
func queueDeadLetter(b *pgx.Batch, d DeadLetter) {
	b.Queue(addDeadLetterSQL, d.args()...).Exec(func(pgconn.CommandTag) error { return nil })
}

func (d DeadLetter) args() []any {
	data := d.Data
	if data == nil {
		data = []byte{}
	}
	return []any{int64(d.Seq), d.Subject, d.UserID, data, d.Reason}
}

// DeadLetters lists the dead letters in stream order.
func DeadLetters(ctx context.Context, pool *pgxpool.Pool) ([]DeadLetter, error) {
	const list = `SELECT stream_seq, subject, user_id, data, reason, created_at
		FROM replica_dead_letters ORDER BY stream_seq`
	rows, err := pool.Query(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	dls, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		var seq int64
		err := row.Scan(&seq, &d.Subject, &d.UserID, &d.Data, &d.Reason, &d.At)
		d.Seq = uint64(seq)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return dls, nil
}

// setAppliedSQL makes the replica's last applied sequence the highest of $1 and what it was.
const setAppliedSQL = `UPDATE replica_state SET last_seq = GREATEST(last_seq, $1), updated_at = now()`

// setApplied records seq as applied.
func setApplied(ctx context.Context, q querier, seq uint64) error {
	if _, err := q.Exec(ctx, setAppliedSQL, int64(seq)); err != nil {
		return fmt.Errorf("set applied seq %d: %w", seq, err)
	}
	return nil
}

// queueSetApplied queues on b what setApplied does.
func queueSetApplied(b *pgx.Batch, seq uint64) {
	b.Queue(setAppliedSQL, int64(seq))
}

// appliedSeq returns the replica's last applied stream sequence (0 before the first).
func appliedSeq(ctx context.Context, q querier) (uint64, error) {
	var seq int64
	if err := q.QueryRow(ctx, `SELECT last_seq FROM replica_state`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read applied seq: %w", err)
	}
	return uint64(seq), nil
}

// lookup reads user id and whether a dead letter names it, in one round trip. found is false when
// the replica has no row for id.
func lookup(ctx context.Context, q querier, id uuid.UUID) (u events.User, found, stale bool, err error) {
	const sel = `SELECT EXISTS (SELECT 1 FROM replica_dead_letters WHERE user_id = $1),
		u.email, u.display_name, u.roles, u.status, u.version
		FROM (VALUES (1)) AS one LEFT JOIN replica_users u ON u.id = $1`
	var email, name, status *string
	var version *int64
	err = q.QueryRow(ctx, sel, id).Scan(&stale, &email, &name, &u.Roles, &status, &version)
	if err != nil {
		return events.User{}, false, false, fmt.Errorf("read replica user %s: %w", id, err)
	}
	if version == nil {
		return events.User{}, false, stale, nil
	}
	u.ID, u.Email, u.DisplayName, u.Status, u.Version = id, *email, *name, *status, *version
	return u, true, stale, nil
}
