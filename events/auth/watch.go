package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/internal/retry"
	"github.com/nats-io/nats.go/jetstream"
)

// Watch timings.
const (
	watchCreateTimeout = 10 * time.Second
	watchRetryMin      = 500 * time.Millisecond
	watchRetryMax      = 10 * time.Second
	// defaultResync is how often a KeyWatch reads the key directly besides watching it.
	defaultResync = time.Minute
)

// KeyWatch keeps a KeySet equal to the JWKS that account publishes at key events.KeysKey of the
// bucket events.KeysBucket. Run it once.
type KeyWatch struct {
	keys   *KeySet
	js     jetstream.JetStream
	log    *slog.Logger
	resync time.Duration      // defaultResync; tests shorten it
	kv     jetstream.KeyValue // nil until the bucket is found
	rev    uint64             // the revision of the key last applied
}

// NewKeyWatch returns a watch that loads the keys into keys through js. A nil log discards.
func NewKeyWatch(keys *KeySet, js jetstream.JetStream, log *slog.Logger) *KeyWatch {
	return &KeyWatch{keys: keys, js: js, log: orDiscard(log), resync: defaultResync}
}

// Run loads the JWKS into the key set and keeps it current until ctx is done, then returns nil.
// Account creates the bucket, which blog and shop may only read: until it exists, Run waits for
// it. It rides out outages of NATS (the watch resumes). An update that cannot be parsed is logged
// and ignored. A delete or purge of the key empties the set, so that no token is accepted: the
// published document is the list of keys account vouches for, and removing it revokes them all
// (failing closed rather than trusting keys nobody publishes any more).
//
// While the key cannot be read (NATS down, the bucket deleted), the set keeps the keys it has.
// Besides the watch, the key is read directly every minute. The watch rests on an ordered
// consumer that resumes from the last stream sequence it saw; if the bucket is deleted and created
// again, the sequences start over and the watch would miss updates for a while, silently; the
// direct read catches them.
func (w *KeyWatch) Run(ctx context.Context) error {
	bo := retry.Backoff{Min: watchRetryMin, Max: watchRetryMax}
	waiting := false
	for {
		started, err := w.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if started {
			bo.Reset()
		}
		wait := bo.Next()
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			if !waiting {
				w.log.Info("waiting for the key bucket; account creates it", "bucket", events.KeysBucket)
				waiting = true
			}
		default:
			w.log.Warn("public key watch interrupted; retrying", "err", err, "retry_in", wait)
		}
		if !retry.Sleep(ctx, wait) {
			return nil
		}
	}
}

// watch runs one watcher of the key until ctx is done or the watcher ends, and reports whether the
// watcher could be started. The ordered consumer beneath a watcher recreates itself after a
// reconnect; when it gives up, the updates channel closes and Run starts a new watcher.
func (w *KeyWatch) watch(ctx context.Context) (bool, error) {
	// The watcher's context is also its lifetime (its subscription ends with it), so the creation
	// is bounded by a timer that cancels it rather than by a deadline.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if w.kv == nil {
		lctx, lcancel := context.WithTimeout(ctx, watchCreateTimeout)
		kv, err := w.js.KeyValue(lctx, events.KeysBucket)
		lcancel()
		if err != nil {
			return false, fmt.Errorf("bucket %s: %w", events.KeysBucket, err)
		}
		w.kv = kv
	}
	timer := time.AfterFunc(watchCreateTimeout, cancel)
	kw, err := w.kv.Watch(ctx, events.KeysKey)
	if !timer.Stop() {
		err = fmt.Errorf("no answer within %v", watchCreateTimeout)
	}
	if err != nil {
		return false, fmt.Errorf("watch key %s: %w", events.KeysKey, err)
	}
	defer func() { _ = kw.Stop() }()
	tick := time.NewTicker(w.resync)
	defer tick.Stop()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case e, ok := <-kw.Updates():
			switch {
			case !ok:
				return true, errors.New("watcher closed")
			case e == nil: // the end of the initial value
				initial = false
			case initial && e.Revision() != w.rev, e.Revision() > w.rev:
				// The initial value is the key as it is now, even at a lower revision (a new
				// bucket); later, an update at or below the last revision was read by get already.
				w.apply(e)
			}
		case <-tick.C:
			w.get(ctx)
		}
	}
}

// get reads the key and applies it when its revision is not the one last applied: a lower
// revision means the bucket was created anew.
func (w *KeyWatch) get(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, watchCreateTimeout)
	defer cancel()
	e, err := w.kv.Get(ctx, events.KeysKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound): // never put, deleted or purged
		if w.keys.Len() > 0 {
			w.keys.clear()
			w.log.Warn("public keys removed; no token is accepted until keys are published")
		}
	case err != nil:
		w.log.Warn("read public keys", "err", err)
	case e.Revision() != w.rev:
		w.apply(e)
	}
}

// apply applies one entry of the key and records its revision.
func (w *KeyWatch) apply(e jetstream.KeyValueEntry) {
	w.rev = e.Revision()
	switch e.Operation() {
	case jetstream.KeyValuePut:
		if err := w.keys.Replace(e.Value()); err != nil {
			w.log.Error("public keys update ignored", "revision", e.Revision(), "err", err)
			return
		}
		w.log.Info("public keys updated", "revision", e.Revision(), "keys", w.keys.Len())
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		w.keys.clear()
		w.log.Warn("public keys removed; no token is accepted until keys are published",
			"revision", e.Revision(), "op", e.Operation().String())
	}
}
