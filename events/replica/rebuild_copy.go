package replica

import (
	"context"
	"fmt"

	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/nats-io/nats.go/jetstream"
)

// maxHeld bounds the users whose newest state a rebuild holds in memory (a few hundred bytes
// each) before it writes them to the copy and reads on. (A variable, so that a test can make a
// rebuild write several times.)
var maxHeld = 1 << 18

// repairGroup is how many users a repair re-reads the messages of at once.
const repairGroup = 64

// shadowCopy is a rebuild's view of shadowTable while it fills it. Applying a run of events with
// the version gate leaves, of each user, the newest of them: so the rebuild applies the stream in
// memory and writes each user once per write, however long its history, and Postgres takes rows,
// not events. The counts come out as applying every event one by one would make them.
type shadowCopy struct {
	conn   *pgx.Conn
	stream jetstream.Stream
	r      streamRange
	// versions is the version of each user that the copy holds, or will once held is written.
	versions map[uuid.UUID]int64
	// held is the newest state of each user read since the last write.
	held map[uuid.UUID]heldRow
	// first and last are the stream sequences of the first and last message read since the last
	// write.
	first, last uint64
}

// heldRow is the newest state read of a user, to be written to the copy.
type heldRow struct {
	seq  uint64
	user events.User
	// before is the version the copy held of the user before the messages read since the last
	// write (0: none).
	before int64
}

// newShadowCopy returns the view of shadowTable for reading r from s into it. The copy of a
// partial rebuild starts as the live replica, whose versions it reads.
func newShadowCopy(ctx context.Context, conn *pgx.Conn, s jetstream.Stream, r streamRange, partial bool) (*shadowCopy, error) {
	c := &shadowCopy{conn: conn, stream: s, r: r, versions: map[uuid.UUID]int64{}, held: map[uuid.UUID]heldRow{}}
	if !partial {
		return c, nil
	}
	if err := c.readVersions(ctx, `SELECT id, version FROM `+shadowTable); err != nil {
		return nil, err
	}
	return c, nil
}

// fill reads c.r into the copy. total sizes the work from the first sequence read, for progress.
func (c *shadowCopy) fill(ctx context.Context, total func(first uint64) uint64, progress func(Progress), res *RebuildResult) error {
	var want uint64
	err := readStream(ctx, c.stream, c.r, func(first uint64) { want = total(first) }, func(msgs []message) error {
		for _, m := range msgs {
			c.take(m, res)
			if len(c.held) < maxHeld {
				continue
			}
			if err := c.write(ctx, res); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(Progress{Done: res.Read, Total: max(want, res.Read)})
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	return c.write(ctx, res)
}

// take applies m to the copy in memory: a valid event newer than the copy's version of its user
// becomes the user's held state.
func (c *shadowCopy) take(m message, res *RebuildResult) {
	res.Read++
	if c.first == 0 {
		c.first = m.seq
	}
	c.last = m.seq
	if m.reason != "" {
		res.Invalid++
		res.Skipped++
		return
	}
	u := m.event.User
	v := c.versions[u.ID]
	if u.Version <= v {
		res.Skipped++
		return
	}
	res.Applied++
	h, ok := c.held[u.ID]
	if !ok {
		h.before = v
	}
	h.seq, h.user = m.seq, u
	c.held[u.ID] = h
	c.versions[u.ID] = u.Version
}

// write writes the held rows to the copy. Rows the database refuses (a data exception, a
// constraint) are found by halving, and their users repaired from their own messages.
func (c *shadowCopy) write(ctx context.Context, res *RebuildResult) error {
	if len(c.held) == 0 {
		return nil
	}
	rows := make([]heldRow, 0, len(c.held))
	for _, h := range c.held {
		rows = append(rows, h)
	}
	refused, err := c.writeRows(ctx, rows)
	if err != nil {
		return fmt.Errorf("rebuild: seq %d-%d: %w", c.first, c.last, err)
	}
	if err := c.repair(ctx, refused, res); err != nil {
		return err
	}
	clear(c.held)
	c.first, c.last = 0, 0
	return nil
}

// writeRows writes rows to the copy in one transaction; when the database refuses it, each half
// in a transaction of its own, and so on down to the refused rows, which it returns. A transient
// error is returned as an error.
func (c *shadowCopy) writeRows(ctx context.Context, rows []heldRow) (refused []heldRow, err error) {
	err = c.copyRows(ctx, rows)
	switch {
	case err == nil || transient(err):
		return nil, err
	case len(rows) == 1:
		return rows, nil
	}
	half := len(rows) / 2
	refused, err = c.writeRows(ctx, rows[:half])
	if err != nil {
		return nil, err
	}
	more, err := c.writeRows(ctx, rows[half:])
	return append(refused, more...), err
}

// copyRows writes rows to the copy in one transaction. Users the copy holds no row of (all of
// them, in the first write of a rebuild from an empty copy) are COPYed straight into it; the
// others into the session's temporary table, then merged with the version gate.
func (c *shadowCopy) copyRows(ctx context.Context, rows []heldRow) error {
	const merge = `INSERT INTO ` + shadowTable + ` AS u (id, email, display_name, roles, status, version, stream_seq, updated_at)
		SELECT id, email, display_name, roles, status, version, seq, now() FROM ` + batchTable + `
		` + newerVersionWins
	var fresh, known []heldRow
	for _, h := range rows {
		if h.before == 0 {
			fresh = append(fresh, h)
		} else {
			known = append(known, h)
		}
	}
	return pgx.BeginFunc(ctx, c.conn, func(tx pgx.Tx) error {
		if len(fresh) > 0 {
			cols := []string{"stream_seq", "id", "email", "display_name", "roles", "status", "version"}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{shadowTable}, cols, copySource(fresh)); err != nil {
				return fmt.Errorf("copy rows: %w", err)
			}
		}
		if len(known) == 0 {
			return nil
		}
		cols := []string{"seq", "id", "email", "display_name", "roles", "status", "version"}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{batchTable}, cols, copySource(known)); err != nil {
			return fmt.Errorf("copy rows: %w", err)
		}
		if _, err := tx.Exec(ctx, merge); err != nil {
			return fmt.Errorf("merge rows: %w", err)
		}
		return nil
	})
}

// copySource is rows as COPY takes them: sequence, id, email, display name, roles, status,
// version.
func copySource(rows []heldRow) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		u := rows[i].user
		// pgtype.UUID is copied as 16 bytes; uuid.UUID would go through its text form.
		return []any{int64(rows[i].seq), pgtype.UUID{Bytes: u.ID, Valid: true}, u.Email, u.DisplayName, u.Roles, u.Status, u.Version}, nil
	})
}

// repair rebuilds the users of refused from their own messages since the last write, read the
// same way (every message, or the last of each subject), applied one by one as the consumer
// applies them: a message the database refuses counts as invalid (the consumer dead-letters it),
// and each user keeps the newest state the database takes, as a rebuild that wrote every event
// would have left it. The counts that take made are corrected to match.
func (c *shadowCopy) repair(ctx context.Context, refused []heldRow, res *RebuildResult) error {
	for len(refused) > 0 {
		group := refused[:min(len(refused), repairGroup)]
		refused = refused[len(group):]
		// newest is the version take saw as newest of each user so far: whether it counted a
		// message applied.
		newest := make(map[uuid.UUID]int64, len(group))
		ids := make([]uuid.UUID, len(group))
		r := streamRange{fromSeq: c.first, last: c.last, lastPerSubject: c.r.lastPerSubject}
		for i, h := range group {
			newest[h.user.ID] = h.before
			ids[i] = h.user.ID
			r.subjects = append(r.subjects, userSubjects(h.user.ID))
		}
		err := readStream(ctx, c.stream, r, nil, func(msgs []message) error {
			for _, m := range msgs {
				// Invalid messages were counted so by take; a last message of a subject before
				// the last write was written then. (A subject changed since the read has a later
				// last message, past c.last: the swap merges that change from the live table.)
				if m.reason != "" || m.seq < c.first {
					continue
				}
				counted := m.event.User.Version > newest[m.event.User.ID]
				if counted {
					newest[m.event.User.ID] = m.event.User.Version
				}
				var changed bool
				err := pgx.BeginFunc(ctx, c.conn, func(tx pgx.Tx) error {
					var err error
					changed, err = applyTo(ctx, tx, shadowTable, m.seq, m.event)
					return err
				})
				switch {
				case err != nil && transient(err):
					return fmt.Errorf("rebuild: %w", err)
				case err != nil:
					res.Invalid++
					if counted {
						res.Applied--
						res.Skipped++
					}
				case changed && !counted:
					// Newer than the copy once a newer one was refused.
					res.Applied++
					res.Skipped--
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := c.reread(ctx, ids); err != nil {
			return err
		}
	}
	return nil
}

// reread sets the versions of users ids to what the copy holds.
func (c *shadowCopy) reread(ctx context.Context, ids []uuid.UUID) error {
	for _, id := range ids {
		delete(c.versions, id)
	}
	return c.readVersions(ctx, `SELECT id, version FROM `+shadowTable+` WHERE id = ANY($1)`, ids)
}

// readVersions sets the versions of the users that query (of id and version) returns.
func (c *shadowCopy) readVersions(ctx context.Context, query string, args ...any) error {
	rows, err := c.conn.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read versions of %s: %w", shadowTable, err)
	}
	var id uuid.UUID
	var version int64
	_, err = pgx.ForEachRow(rows, []any{&id, &version}, func() error {
		c.versions[id] = version
		return nil
	})
	if err != nil {
		return fmt.Errorf("read versions of %s: %w", shadowTable, err)
	}
	return nil
}

// userSubjects is the subject filter of every message about user id, whatever its type
// (events.Subject).
func userSubjects(id uuid.UUID) string { return "users.*." + id.String() }
