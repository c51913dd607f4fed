package replica

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// maxDetailed bounds how many differences Verify fetches the stream's state for.
const maxDetailed = 100

// Kinds of Difference.
const (
	Missing   = "missing"   // the stream has the user, the replica does not
	Extra     = "extra"     // the replica has the user, the stream does not
	Different = "different" // both have it, in different states
)

// Difference is a user on which the replica and the stream disagree.
type Difference struct {
	UserID uuid.UUID
	Kind   string   // Missing, Extra or Different
	Fields []string // for Different: the fields that differ (email, display_name, roles, status, version)
	// Replica and Stream are the two states, when present and known (Stream is filled for the
	// first differences only, as it is fetched from the stream again).
	Replica, Stream *events.User
	Seq             uint64 // sequence of the stream's state, 0 for Extra
}

// VerifyResult is the outcome of Verify. The replica equals the stream when Differences is empty.
type VerifyResult struct {
	LastSeq     uint64 // stream sequence the check covers
	Read        uint64 // messages read
	Users       int    // users the stream holds a valid state for, up to LastSeq
	Unchecked   int    // users changed after LastSeq, or not applied yet: not compared
	Differences []Difference
}

// Verify compares the replica with the state of highest version per user found in the stream,
// read with an ordered consumer up to its last sequence at the start. Users the consumer changed
// from later events, and users whose latest event the replica has not reached yet (its applied
// sequence), are counted Unchecked rather than reported: run it again once the lag is 0.
// It returns ErrRebuildRunning when a rebuild holds the database.
// Messages that cannot be applied are left out, as the consumer leaves them out. progress, when
// set, is called after every batch read.
func Verify(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, progress func(Progress)) (VerifyResult, error) {
	var res VerifyResult
	stream, info, err := openStream(ctx, js)
	if err != nil {
		return res, err
	}
	res.LastSeq = info.State.LastSeq

	// Per user, the newest valid state: its version, sequence and a digest of the rest, so that a
	// big stream fits in memory.
	type state struct {
		seq     uint64
		version int64
		sum     uint64
	}
	seed := maphash.MakeSeed()
	newest := make(map[uuid.UUID]state)
	var total uint64
	err = readStream(ctx, stream, streamRange{last: res.LastSeq}, func(seq uint64) {
		total = res.LastSeq - seq + 1
	}, func(b []message) error {
		for _, m := range b {
			res.Read++
			if m.reason != "" {
				continue
			}
			u := m.event.User
			if s, ok := newest[u.ID]; ok && s.version >= u.Version {
				continue
			}
			newest[u.ID] = state{seq: m.seq, version: u.Version, sum: digest(seed, u)}
		}
		if progress != nil {
			progress(Progress{Done: res.Read, Total: max(total, res.Read)})
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.Users = len(newest)

	const sel = `SELECT id, email, display_name, roles, status, version, stream_seq FROM ` + usersTable
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// The read holds the table for a while: a rebuild's swap must not queue behind it (and
		// the service's reads behind the swap), so the two exclude each other.
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock_shared($1)`, int64(rebuildLock)).Scan(&locked); err != nil {
			return fmt.Errorf("verify: lock: %w", err)
		}
		if !locked {
			return ErrRebuildRunning
		}
		applied, err := appliedSeq(ctx, tx)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sel)
		if err != nil {
			return fmt.Errorf("read replica: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u events.User
			var rowSeq int64
			if err := rows.Scan(&u.ID, &u.Email, &u.DisplayName, &u.Roles, &u.Status, &u.Version, &rowSeq); err != nil {
				return fmt.Errorf("read replica: %w", err)
			}
			s, ok := newest[u.ID]
			delete(newest, u.ID)
			switch {
			case uint64(rowSeq) > res.LastSeq:
				res.Unchecked++
			case !ok:
				res.Differences = append(res.Differences, Difference{UserID: u.ID, Kind: Extra, Replica: &u})
			case s.version == u.Version && s.sum == digest(seed, u):
			case s.seq > applied:
				res.Unchecked++
			default:
				res.Differences = append(res.Differences, Difference{UserID: u.ID, Kind: Different, Replica: &u, Seq: s.seq})
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read replica: %w", err)
		}
		for id, s := range newest {
			if s.seq > applied {
				res.Unchecked++
				continue
			}
			res.Differences = append(res.Differences, Difference{UserID: id, Kind: Missing, Seq: s.seq})
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	slices.SortFunc(res.Differences, func(a, b Difference) int { return strings.Compare(a.UserID.String(), b.UserID.String()) })
	return res, detail(ctx, stream, res.Differences)
}

// detail fetches the stream's state of the first maxDetailed differences and names the fields
// that differ.
func detail(ctx context.Context, s jetstream.Stream, diffs []Difference) error {
	for i := range diffs[:min(len(diffs), maxDetailed)] {
		d := &diffs[i]
		if d.Seq == 0 {
			continue
		}
		msg, err := s.GetMsg(ctx, d.Seq)
		if err != nil {
			return fmt.Errorf("get stream message %d: %w", d.Seq, err)
		}
		e, _ := parse(msg.Subject, msg.Data)
		d.Stream = &e.User
		if d.Replica != nil {
			d.Fields = fieldsDiffer(*d.Replica, *d.Stream)
		}
	}
	return nil
}

// fieldsDiffer names the fields in which a and b differ.
func fieldsDiffer(a, b events.User) []string {
	var f []string
	if a.Email != b.Email {
		f = append(f, "email")
	}
	if a.DisplayName != b.DisplayName {
		f = append(f, "display_name")
	}
	if !slices.Equal(a.Roles, b.Roles) {
		f = append(f, "roles")
	}
	if a.Status != b.Status {
		f = append(f, "status")
	}
	if a.Version != b.Version {
		f = append(f, "version")
	}
	return f
}

// digest hashes the state of u besides its id and version.
func digest(seed maphash.Seed, u events.User) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, s := range []string{u.Email, u.DisplayName, u.Status} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	for _, r := range u.Roles {
		h.WriteString(r)
		h.WriteByte(1)
	}
	return h.Sum64()
}
