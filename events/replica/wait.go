package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/internal/retry"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// recheckInterval is how often a waiter re-reads the row while the listener is down.
	recheckInterval = 100 * time.Millisecond
	// listenPing is how long the listener waits for a notification before it checks that its
	// connection is still alive.
	listenPing = 30 * time.Second
)

// User returns the replica's state of user id, waiting for it to reach minVersion as the package
// doc says. It returns ErrLagging or ErrStale as described there, or ctx's error.
func (r *Replica) User(ctx context.Context, id uuid.UUID, minVersion int64) (events.User, error) {
	if u, ok := r.view.get(id); ok && u.Version >= minVersion {
		r.m.viewHits.Inc()
		return u, nil
	}
	// Register before reading, so that a NOTIFY between the read and the wait is not lost.
	wake := r.waiters.add(id)
	defer r.waiters.remove(id, wake)

	var timeout <-chan time.Time
	for {
		epoch := r.view.begin()
		u, found, stale, err := lookup(ctx, r.cfg.Pool, id)
		switch {
		case err != nil && ctx.Err() != nil:
			r.m.lookups.WithLabelValues(resultCanceled).Inc()
			return events.User{}, ctx.Err()
		case err != nil:
			r.m.lookups.WithLabelValues(resultError).Inc()
			return events.User{}, err
		case stale:
			r.m.lookups.WithLabelValues(resultStale).Inc()
			return events.User{}, ErrStale
		case found && u.Version >= minVersion:
			r.view.store(epoch, u)
			if timeout == nil {
				r.m.lookups.WithLabelValues(resultHit).Inc()
			} else {
				r.m.lookups.WithLabelValues(resultCaughtUp).Inc()
			}
			return u, nil
		}

		if timeout == nil {
			t := time.NewTimer(r.cfg.Wait)
			defer t.Stop()
			timeout = t.C
		}
		var recheck <-chan time.Time
		if !r.listening.Load() {
			recheck = time.After(recheckInterval)
		}
		select {
		case <-wake:
		case <-recheck:
		case <-timeout:
			r.m.lookups.WithLabelValues(resultLagging).Inc()
			return events.User{}, ErrLagging
		case <-ctx.Done():
			r.m.lookups.WithLabelValues(resultCanceled).Inc()
			return events.User{}, ctx.Err()
		}
	}
}

// waiters are the callers of User waiting for a user to change, by user id.
type waiters struct {
	mu     sync.Mutex
	byUser map[uuid.UUID]map[chan struct{}]struct{}
}

// add registers a waiter for id and returns the channel that wakes it.
func (w *waiters) add(id uuid.UUID) chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byUser == nil {
		w.byUser = make(map[uuid.UUID]map[chan struct{}]struct{})
	}
	set := w.byUser[id]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		w.byUser[id] = set
	}
	set[ch] = struct{}{}
	return ch
}

// remove unregisters the waiter ch of id.
func (w *waiters) remove(id uuid.UUID, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byUser[id], ch)
	if len(w.byUser[id]) == 0 {
		delete(w.byUser, id)
	}
}

// wake wakes every waiter of id.
func (w *waiters) wake(id uuid.UUID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.byUser[id] {
		signal(ch)
	}
}

// wakeAll wakes every waiter, so each reads its row again.
func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.byUser {
		for ch := range set {
			signal(ch)
		}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already signalled
	}
}

// listen holds a connection that LISTENs on the replica's channel and wakes the waiters of every
// user an apply changed, whichever instance applied it. It reconnects until ctx is done.
func (r *Replica) listen(ctx context.Context) {
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for {
		err := r.listenOnce(ctx, &bo)
		r.listening.Store(false)
		r.view.reset(false) // what it missed meanwhile would never reach it
		r.waiters.wakeAll() // they fall back to re-checking until the listener is back
		if ctx.Err() != nil {
			return
		}
		r.cfg.Log.Warn("replica listener down, reconnecting", "err", err)
		if !retry.Sleep(ctx, bo.Next()) {
			return
		}
	}
}

// listenOnce listens on one connection until it fails or ctx is done.
func (r *Replica) listenOnce(ctx context.Context, bo *retry.Backoff) error {
	pc, err := r.cfg.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listen connection: %w", err)
	}
	// The connection leaves the pool: it stays in LISTEN, and is closed, never reused.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	r.listening.Store(true)
	// Notifications sent while nobody listened are lost: the view starts empty, and every waiter
	// reads its row again.
	r.view.reset(true)
	r.waiters.wakeAll()
	bo.Reset()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			// Drop before waking, so that a woken waiter's read is the one the view keeps.
			if id, err := uuid.Parse(n.Payload); err == nil {
				r.view.drop(id)
				r.waiters.wake(id)
			} else if n.Payload == notifyAll {
				r.view.reset(true)
				r.waiters.wakeAll()
			}
		case pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded):
			// Quiet for a while: make sure the connection is still there.
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping listen connection: %w", err)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}
