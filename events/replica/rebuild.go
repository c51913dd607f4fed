package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// shadowTable is the copy of usersTable that a rebuild fills before swapping it in. A copy left over by
// an interrupted rebuild is dropped by the next one.
const shadowTable = usersTable + "_rebuild"

// batchTable is the session's temporary table that a rebuild copies each batch of events into.
const batchTable = "replica_rebuild_batch"

// rebuildLock is the key of the advisory lock that lets one rebuild run at a time per database,
// and none while a verify reads the replica.
const rebuildLock = 0x7265_6275_696c_64 // "rebuild"

// mergeMargin is how far before the copy of the live table a partial rebuild looks for rows the
// consumer changed: longer than any of its transactions, so that a row committed after the copy
// by a transaction that started before it is merged too.
const mergeMargin = time.Minute

// ErrRebuildRunning means another rebuild, or a verify reading the replica, holds the database's
// rebuild lock. Try again when it is done.
var ErrRebuildRunning = errors.New("a rebuild or a verify is running on this database")

// RebuildOptions says where a rebuild starts and what it reads. With neither FromSeq nor Since,
// it is full: the new copy starts empty and takes in the whole stream, or with LastPerSubject only
// the last message of each subject. With FromSeq or Since, the copy starts from the live replica
// and re-applies the stream from that point (repair after a database restore).
type RebuildOptions struct {
	FromSeq uint64    // first stream sequence to re-apply
	Since   time.Time // re-apply the events stored at or after this time
	// LastPerSubject reads only the last message of each subject, so that the cost grows with the
	// users rather than with the history. Every event carries the user's full state, so the
	// highest version among a user's last messages is its current state, as long as versions grow
	// along the stream and the last message of each subject can be applied (docs/operations.md
	// says when the full read is needed instead). Exclusive with FromSeq and Since.
	LastPerSubject bool
	// Progress, when set, is called after every batch of messages taken in, from the goroutine
	// that called Rebuild. Blocking in it holds up the rebuild.
	Progress func(Progress)
}

// Progress is how far a rebuild or a verify has read.
type Progress struct {
	Done  uint64 // messages read and taken in
	Total uint64 // messages to read, as far as known (0 until the first one arrives)
}

// RebuildResult is what a rebuild did.
type RebuildResult struct {
	Full           bool   // whether the copy started empty
	LastPerSubject bool   // whether it read only the last message of each subject
	LastSeq        uint64 // the stream sequence the rebuild read up to
	Read           uint64 // messages read from the stream
	Applied        uint64 // events that changed the copy (as applying them one by one would have)
	Skipped        uint64 // events not newer than the copy, plus Invalid ones
	Invalid        uint64 // messages that cannot be decoded, are invalid, or that the database refuses (dead letters' business)
	Merged         uint64 // rows the consumer changed while the rebuild ran, taken into the copy at the swap
	Elapsed        time.Duration
}

// Rebuild builds a new copy of the replica from the stream and swaps it in, in one transaction,
// while the service keeps serving and its consumer keeps applying.
//
// It reads the stream up to its last sequence at the start with an ordered consumer, keeps in
// memory the newest state of each user read (applying events with the version gate keeps nothing
// else), writes those rows to the copy with COPY, then, holding an EXCLUSIVE lock on the live
// table (reads go on, the consumer's writes wait), merges into the copy what the consumer applied
// meanwhile and renames the copy into place. When ctx is done before the swap, the copy is
// dropped, the live replica is untouched and ctx's error is returned. Only one rebuild runs at a
// time per database, and not while a verify reads the replica: ErrRebuildRunning.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, opts RebuildOptions) (RebuildResult, error) {
	start := time.Now()
	partial := opts.FromSeq > 0 || !opts.Since.IsZero()
	switch {
	case opts.FromSeq > 0 && !opts.Since.IsZero():
		return RebuildResult{}, errors.New("rebuild: FromSeq and Since are exclusive")
	case opts.LastPerSubject && partial:
		return RebuildResult{}, errors.New("rebuild: LastPerSubject reads the current state, from no sequence or time")
	}
	res := RebuildResult{Full: !partial, LastPerSubject: opts.LastPerSubject}

	pc, err := pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("rebuild: acquire connection: %w", err)
	}
	// The connection holds the lock and the temporary table: it is closed, never reused. The lock
	// is released first, so that it is free when Rebuild returns, not only once the server has
	// noticed the connection is gone.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(cctx, `SELECT pg_advisory_unlock_all()`)
		_ = conn.Close(cctx)
	}()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(rebuildLock)).Scan(&locked); err != nil {
		return res, fmt.Errorf("rebuild: lock: %w", err)
	}
	if !locked {
		return res, ErrRebuildRunning
	}
	// The rebuild's own statements may take long (the copy of a big table); only waits for locks
	// are bounded, so that the swap gives up rather than queue forever.
	if _, err := conn.Exec(ctx, `SET statement_timeout = 0; SET lock_timeout = '10s'`); err != nil {
		return res, fmt.Errorf("rebuild: session settings: %w", err)
	}

	stream, info, err := openStream(ctx, js)
	if err != nil {
		return res, err
	}
	res.LastSeq = info.State.LastSeq

	copiedAt, err := createShadow(ctx, conn, partial)
	if err != nil {
		return res, err
	}
	swapped := false
	defer func() {
		if swapped {
			return
		}
		// Interrupted or failed: the live table was never touched; the copy goes.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = conn.Exec(cctx, `DROP TABLE IF EXISTS `+shadowTable)
	}()

	r := streamRange{last: res.LastSeq, lastPerSubject: opts.LastPerSubject}
	if partial {
		r.fromSeq, r.fromTime = opts.FromSeq, opts.Since
	}
	c, err := newShadowCopy(ctx, conn, stream, r, partial)
	if err != nil {
		return res, err
	}
	total := func(first uint64) uint64 { return r.last - first + 1 }
	if r.lastPerSubject {
		// One message per subject that the stream held at the start.
		total = func(uint64) uint64 { return info.State.NumSubjects }
	}
	if err := c.fill(ctx, total, opts.Progress, &res); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	// The copy is filled unlogged, which is faster; it is written to the WAL in one go before it
	// becomes the live table. (A crash before that only loses the copy.)
	if _, err := conn.Exec(ctx, `ALTER TABLE `+shadowTable+` SET LOGGED`); err != nil {
		return res, fmt.Errorf("rebuild: log %s: %w", shadowTable, err)
	}
	merged, err := swap(ctx, conn, res.LastSeq, res.Full, copiedAt)
	if err != nil {
		return res, err
	}
	swapped = true
	res.Merged = merged
	res.Elapsed = time.Since(start)
	return res, nil
}

// createShadow creates shadowTable (unlogged) shaped like usersTable, dropping a leftover first, and for a partial
// rebuild copies the live rows into it. It returns the database's time at the copy.
func createShadow(ctx context.Context, conn *pgx.Conn, copyLive bool) (time.Time, error) {
	const create = `DROP TABLE IF EXISTS ` + shadowTable + `;
		CREATE UNLOGGED TABLE ` + shadowTable + ` (LIKE ` + usersTable + ` INCLUDING ALL);
		CREATE TEMP TABLE IF NOT EXISTS ` + batchTable + ` (
			seq          bigint NOT NULL,
			id           uuid NOT NULL,
			email        text NOT NULL,
			display_name text NOT NULL,
			roles        text[] NOT NULL,
			status       text NOT NULL,
			version      bigint NOT NULL
		) ON COMMIT DELETE ROWS`
	const copyRows = `INSERT INTO ` + shadowTable + ` SELECT * FROM ` + usersTable
	var at time.Time
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, create); err != nil {
			return fmt.Errorf("create %s: %w", shadowTable, err)
		}
		// now() is the transaction's start, before the copy's snapshot.
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&at); err != nil {
			return fmt.Errorf("create %s: %w", shadowTable, err)
		}
		if !copyLive {
			return nil
		}
		if _, err := tx.Exec(ctx, copyRows); err != nil {
			return fmt.Errorf("copy %s into %s: %w", usersTable, shadowTable, err)
		}
		return nil
	})
	return at, err
}

// swap puts shadowTable in the place of usersTable in one transaction and returns how many live rows
// it merged. Under an EXCLUSIVE lock on usersTable, which lets reads go on and makes the consumer's
// writes wait, it merges into the copy, with the version gate, the live rows the consumer set
// from events after last (and, for a partial rebuild, every row it changed since the copy, which
// may be older events it was still catching up on); then it drops usersTable, renames the copy and its
// indexes to the live names (so that the next rebuild's names are free), and wakes every waiter
// of User. The consumer's statements name usersTable, so they go on against the new table.
func swap(ctx context.Context, conn *pgx.Conn, last uint64, full bool, copiedAt time.Time) (uint64, error) {
	const merge = `INSERT INTO ` + shadowTable + ` AS u
		SELECT * FROM ` + usersTable + ` l WHERE l.stream_seq > $1 OR (NOT $2 AND l.updated_at >= $3)
		` + newerVersionWins
	const indexes = `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = '` + usersTable + `'::regclass`
	var merged uint64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+usersTable+` IN EXCLUSIVE MODE`); err != nil {
			return fmt.Errorf("lock %s: %w", usersTable, err)
		}
		tag, err := tx.Exec(ctx, merge, int64(last), full, copiedAt.Add(-mergeMargin))
		if err != nil {
			return fmt.Errorf("merge %s into %s: %w", usersTable, shadowTable, err)
		}
		merged = uint64(tag.RowsAffected())
		if _, err := tx.Exec(ctx, `DROP TABLE `+usersTable+`; ALTER TABLE `+shadowTable+` RENAME TO `+usersTable); err != nil {
			return fmt.Errorf("swap %s for %s: %w", shadowTable, usersTable, err)
		}
		rows, err := tx.Query(ctx, indexes)
		if err != nil {
			return fmt.Errorf("list indexes of %s: %w", usersTable, err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("list indexes of %s: %w", usersTable, err)
		}
		for _, name := range names {
			if !strings.HasPrefix(name, shadowTable) {
				continue
			}
			to := usersTable + strings.TrimPrefix(name, shadowTable)
			rename := `ALTER INDEX ` + pgx.Identifier{name}.Sanitize() + ` RENAME TO ` + pgx.Identifier{to}.Sanitize()
			if _, err := tx.Exec(ctx, rename); err != nil {
				return fmt.Errorf("rename index %s: %w", name, err)
			}
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', '`+notifyAll+`')`); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
		return nil
	})
	return merged, err
}
