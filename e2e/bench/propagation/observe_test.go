package propagation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// observer watches a service's replica. It LISTENs on the channel replica_users, on which the
// replica's apply transaction announces, once it commits, the id of each user it changed: from
// that moment every request reads the new state. A change expects the notification of its user
// before it asks for it, since the notification may come before the PUT's answer.
type observer struct {
	service string
	pool    *pgxpool.Pool // reads the replica's rows
	conn    *pgx.Conn     // LISTENs, and does nothing else, so a notification is read at once

	mu      sync.Mutex
	waiting map[uuid.UUID]chan time.Time

	stop context.CancelFunc
	done chan error
}

// replicaChannel is the channel of the replica's notifications (events/replica).
const replicaChannel = "replica_users"

// observe connects to a service's database and listens until close.
func observe(ctx context.Context, service, dbURL string) (*observer, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("%s database: %w", service, err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s database: %w", service, err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+replicaChannel); err != nil {
		pool.Close()
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("%s: listen: %w", service, err)
	}
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	o := &observer{service: service, pool: pool, conn: conn, waiting: map[uuid.UUID]chan time.Time{},
		stop: stop, done: make(chan error, 1)}
	go func() { o.done <- o.listen(lctx) }()
	return o, nil
}

// listen hands each notification, with the time it was read, to the change waiting for its user;
// the others (users no change waits for) are ignored.
func (o *observer) listen(ctx context.Context) error {
	for {
		n, err := o.conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: wait for notification: %w", o.service, err)
		}
		at := time.Now()
		id, err := uuid.Parse(n.Payload)
		if err != nil {
			continue
		}
		o.mu.Lock()
		ch := o.waiting[id]
		delete(o.waiting, id)
		o.mu.Unlock()
		if ch != nil {
			ch <- at
		}
	}
}

// expect registers a change of user id; the channel receives the time its notification was read.
func (o *observer) expect(id uuid.UUID) <-chan time.Time {
	ch := make(chan time.Time, 1)
	o.mu.Lock()
	o.waiting[id] = ch
	o.mu.Unlock()
	return ch
}

// forget drops the registration of id, if still there.
func (o *observer) forget(id uuid.UUID) {
	o.mu.Lock()
	delete(o.waiting, id)
	o.mu.Unlock()
}

// row returns the version of user id in the replica and its updated_at: now() of the apply
// transaction, that is, the time it began.
func (o *observer) row(ctx context.Context, id uuid.UUID) (version int64, began time.Time, err error) {
	err = o.pool.QueryRow(ctx, `SELECT version, updated_at FROM replica_users WHERE id = $1`, id).Scan(&version, &began)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%s: replica row of %s: %w", o.service, id, err)
	}
	return version, began, nil
}

// caughtUp waits until the replica holds every user of ids, for at most 30 seconds.
func (o *observer) caughtUp(ctx context.Context, ids []uuid.UUID) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var n int
		err := o.pool.QueryRow(ctx, `SELECT count(*) FROM replica_users WHERE id = ANY($1)`, ids).Scan(&n)
		switch {
		case err != nil:
			return fmt.Errorf("%s: replica not caught up: %w", o.service, err)
		case n == len(ids):
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: replica holds %d of %d users after 30s", o.service, n, len(ids))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sync returns once the listener has read every notification sent before it was called: it
// sends one of its own, which Postgres delivers after those of the transactions committed before.
func (o *observer) sync(ctx context.Context) error {
	marker := uuid.New()
	read := o.expect(marker)
	defer o.forget(marker)
	if _, err := o.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, replicaChannel, marker.String()); err != nil {
		return fmt.Errorf("%s: notify: %w", o.service, err)
	}
	select {
	case <-read:
		return nil
	case <-time.After(enforceTimeout):
		return fmt.Errorf("%s: own notification not read within %s", o.service, enforceTimeout)
	}
}

// close stops listening and closes the connections; it reports a failure of the listener.
func (o *observer) close() error {
	o.stop()
	err := <-o.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = errors.Join(err, o.conn.Close(ctx))
	o.pool.Close()
	return err
}
