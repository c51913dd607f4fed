package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/authmesh/events"
	"github.com/authmesh/events/pg"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// StatusReport is the state of a replica against the stream.
type StatusReport struct {
	StreamLastSeq uint64 `json:"stream_last_seq"` // last sequence of the USERS stream
	AppliedSeq    uint64 `json:"applied_seq"`     // highest sequence the replica committed
	Lag           uint64 `json:"lag"`             // StreamLastSeq - AppliedSeq, or 0
	Users         int64  `json:"users"`           // rows of the replica
	DeadLetters   int64  `json:"dead_letters"`    // events that could not be applied
	// Consumer is the service's durable consumer as the server sees it; nil when it does not
	// exist (the service never ran against this server).
	Consumer *ConsumerReport `json:"consumer,omitempty"`
}

// ConsumerReport is the state of a durable consumer.
type ConsumerReport struct {
	Name          string `json:"name"`
	NumPending    uint64 `json:"pending"`     // not yet delivered
	NumAckPending int    `json:"ack_pending"` // delivered, not yet acknowledged
	NumRedeliver  int    `json:"redelivered"` // delivered more than once, not yet acknowledged
}

// Status reads the replica's state in pool and the stream's and durable consumer's in js.
func Status(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, durable string) (StatusReport, error) {
	const counts = `SELECT (SELECT last_seq FROM replica_state),
		(SELECT count(*) FROM ` + usersTable + `),
		(SELECT count(*) FROM replica_dead_letters)`
	var rep StatusReport
	var applied int64
	if err := pool.QueryRow(ctx, counts).Scan(&applied, &rep.Users, &rep.DeadLetters); err != nil {
		return rep, fmt.Errorf("read replica: %w", err)
	}
	rep.AppliedSeq = uint64(applied)
	_, info, err := openStream(ctx, js)
	if err != nil {
		return rep, err
	}
	rep.StreamLastSeq = info.State.LastSeq
	if rep.StreamLastSeq > rep.AppliedSeq {
		rep.Lag = rep.StreamLastSeq - rep.AppliedSeq
	}
	if durable == "" {
		return rep, nil
	}
	c, err := js.Consumer(ctx, events.StreamName, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("consumer %s: %w", durable, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return rep, fmt.Errorf("consumer %s info: %w", durable, err)
	}
	rep.Consumer = &ConsumerReport{
		Name:          durable,
		NumPending:    ci.NumPending,
		NumAckPending: ci.NumAckPending,
		NumRedeliver:  ci.NumRedelivered,
	}
	return rep, nil
}

// Outcomes of Retry.
const (
	RetryApplied    = "applied"    // the event now applies: the replica took it (or held newer)
	RetrySuperseded = "superseded" // a later event of the user, with its full state, is applied
	RetryFailed     = "failed"     // it still cannot be applied; Reason says why
)

// RetryResult is what Retry did with one dead letter.
type RetryResult struct {
	Seq     uint64
	UserID  *uuid.UUID
	Outcome string // RetryApplied, RetrySuperseded or RetryFailed
	Reason  string // why it failed, for RetryFailed
}

// ErrNoDeadLetter means Retry was asked for a sequence that is not in dead letters.
var ErrNoDeadLetter = errors.New("no dead letter at that sequence")

// Retry applies dead letters again, each in a transaction of its own: all of them, or only the
// one at seq when seq is not 0 (ErrNoDeadLetter when there is none). One that applies now
// (after a fix: new code, a corrected constraint) or that a later applied event of the same user
// supersedes (every event carries the user's full state) leaves the list, which ends ErrStale for
// its user; one that still fails stays, with its reason updated. It returns an error only when it
// cannot go on (the database is unreachable); failures of dead letters are in the results.
func Retry(ctx context.Context, pool *pgxpool.Pool, seq uint64) ([]RetryResult, error) {
	var seqs []uint64
	if seq != 0 {
		seqs = []uint64{seq}
	} else {
		dls, err := DeadLetters(ctx, pool)
		if err != nil {
			return nil, err
		}
		for _, d := range dls {
			seqs = append(seqs, d.Seq)
		}
	}
	var results []RetryResult
	for _, s := range seqs {
		res, err := retryOne(ctx, pool, s)
		if errors.Is(err, ErrNoDeadLetter) && seq == 0 {
			continue // resolved meanwhile (by another retry)
		}
		if err != nil {
			return results, err
		}
		results = append(results, res)
	}
	return results, nil
}

// retryOne retries the dead letter at seq, holding its row locked so that two retries do not
// apply it twice.
func retryOne(ctx context.Context, pool *pgxpool.Pool, seq uint64) (RetryResult, error) {
	const sel = `SELECT subject, user_id, data,
			(SELECT stream_seq FROM ` + usersTable + ` WHERE id = d.user_id)
		FROM replica_dead_letters d WHERE stream_seq = $1 FOR UPDATE`
	const del = `WITH gone AS (DELETE FROM replica_dead_letters WHERE stream_seq = $1 RETURNING user_id)
		SELECT pg_notify('` + notifyChannel + `', user_id::text) FROM gone WHERE user_id IS NOT NULL`
	res := RetryResult{Seq: seq}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var d DeadLetter
		var rowSeq *int64
		err := tx.QueryRow(ctx, sel, int64(seq)).Scan(&d.Subject, &d.UserID, &d.Data, &rowSeq)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("retry seq %d: %w", seq, ErrNoDeadLetter)
		}
		if err != nil {
			return fmt.Errorf("retry seq %d: %w", seq, err)
		}
		d.Seq, res.UserID = seq, d.UserID

		e, reason := parse(d.Subject, d.Data)
		if reason == "" {
			reason, err = applySaved(ctx, tx, seq, e)
			if err != nil {
				return err
			}
		}
		switch {
		case reason == "":
			res.Outcome = RetryApplied
		case rowSeq != nil && uint64(*rowSeq) > seq:
			res.Outcome = RetrySuperseded
		default:
			res.Outcome, res.Reason = RetryFailed, reason
			d.Reason = clean(reason)
			return addDeadLetter(ctx, tx, d)
		}
		if _, err := tx.Exec(ctx, del, int64(seq)); err != nil {
			return fmt.Errorf("remove dead letter seq %d: %w", seq, err)
		}
		return nil
	})
	return res, err
}

// applySaved applies e inside a savepoint of tx. An error that the event causes (a data exception,
// a constraint) is returned as a reason, with the savepoint rolled back so that tx goes on; any
// other error is returned as an error.
func applySaved(ctx context.Context, tx pgx.Tx, seq uint64, e events.Event) (reason string, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("savepoint: %w", err)
	}
	if _, err := apply(ctx, sp, seq, e); err != nil {
		_ = sp.Rollback(ctx)
		if pg.DataError(err) {
			return "apply: " + err.Error(), nil
		}
		return "", err
	}
	if err := sp.Commit(ctx); err != nil {
		return "", fmt.Errorf("release savepoint: %w", err)
	}
	return "", nil
}
