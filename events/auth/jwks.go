package auth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/authmesh/events"
	"github.com/nats-io/nats.go/jetstream"
)

// JWK is a public Ed25519 key as a JSON Web Key (RFC 8037).
type JWK struct {
	Kty string `json:"kty"` // "OKP"
	Crv string `json:"crv"` // "Ed25519"
	X   string `json:"x"`   // the public key, base64url without padding
	Kid string `json:"kid"` // the RFC 7638 thumbprint
	Use string `json:"use"` // "sig"
	Alg string `json:"alg"` // "EdDSA"
}

// JWKS is a JSON Web Key Set: the document served at /.well-known/jwks.json and stored in the
// key-value bucket.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// NewJWK returns the JWK of pub, its kid being its RFC 7638 thumbprint.
func NewJWK(pub ed25519.PublicKey) JWK {
	x := base64.RawURLEncoding.EncodeToString(pub)
	return JWK{Kty: "OKP", Crv: "Ed25519", X: x, Kid: thumbprint(x), Use: "sig", Alg: Algorithm}
}

// thumbprint is the RFC 7638 thumbprint of the OKP Ed25519 key whose x is x: the SHA-256 of the
// required members in lexicographic order, without whitespace.
func thumbprint(x string) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// KeySet is the set of public keys a Verifier accepts, safe for concurrent use and replaceable
// while in use (key rotation). The zero value is an empty set.
type KeySet struct {
	keys   atomic.Pointer[map[string]ed25519.PublicKey]
	resync time.Duration // of Watch; defaultResync when zero (tests shorten it)
}

// NewKeySet returns a key set holding the keys of a JWKS document; an empty document gives an
// empty set, which accepts no token.
func NewKeySet(jwks []byte) (*KeySet, error) {
	k := &KeySet{}
	if len(bytes.TrimSpace(jwks)) == 0 {
		return k, nil
	}
	if err := k.Replace(jwks); err != nil {
		return nil, err
	}
	return k, nil
}

// Replace swaps in the keys of a JWKS document. A document that cannot be parsed leaves the set as
// it was and returns an error. Keys that are not usable Ed25519 signing keys (another kty or crv,
// an x that is not 32 bytes of base64url, no kid, a use other than "sig", an alg other than EdDSA)
// are skipped, so a document of such keys only empties the set. A kid is taken as given: it is
// only a name to look the key up by.
func (k *KeySet) Replace(jwks []byte) error {
	keys, err := parseJWKS(jwks)
	if err != nil {
		return err
	}
	k.keys.Store(&keys)
	return nil
}

// clear empties the set.
func (k *KeySet) clear() {
	k.keys.Store(&map[string]ed25519.PublicKey{})
}

func parseJWKS(jwks []byte) (map[string]ed25519.PublicKey, error) {
	// Each key is decoded on its own, so one key of an unexpected shape does not hide the others.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &doc); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New("parse jwks: no keys member")
	}
	keys := make(map[string]ed25519.PublicKey, len(doc.Keys))
	for _, raw := range doc.Keys {
		var j JWK
		if err := json.Unmarshal(raw, &j); err != nil {
			continue
		}
		pub, ok := j.publicKey()
		if !ok {
			continue
		}
		if _, dup := keys[j.Kid]; !dup {
			keys[j.Kid] = pub
		}
	}
	return keys, nil
}

// publicKey returns the Ed25519 key of j, if j is a usable signing key.
func (j JWK) publicKey() (ed25519.PublicKey, bool) {
	if j.Kty != "OKP" || j.Crv != "Ed25519" || j.Kid == "" {
		return nil, false
	}
	if (j.Use != "" && j.Use != "sig") || (j.Alg != "" && j.Alg != Algorithm) {
		return nil, false
	}
	x, err := base64.RawURLEncoding.Strict().DecodeString(j.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(x), true
}

// Key returns the key with the given kid.
func (k *KeySet) Key(kid string) (ed25519.PublicKey, bool) {
	m := k.keys.Load()
	if m == nil {
		return nil, false
	}
	pub, ok := (*m)[kid]
	return pub, ok
}

// Len returns the number of keys in the set.
func (k *KeySet) Len() int {
	m := k.keys.Load()
	if m == nil {
		return 0
	}
	return len(*m)
}

// Watch timings.
const (
	watchCreateTimeout = 10 * time.Second
	watchRetryMin      = 500 * time.Millisecond
	watchRetryMax      = 10 * time.Second
	// defaultResync is how often Watch reads the key directly besides watching it.
	defaultResync = time.Minute
)

// Watch loads the JWKS from key events.KeysKey of the bucket events.KeysBucket into k and keeps it
// current until ctx is done, then returns nil. Account creates the bucket, which blog and shop
// may only read: until it exists, Watch waits for it. It rides out outages of NATS (the watch
// resumes). An update that cannot
// be parsed is logged and ignored. A delete or purge of the key empties the set, so that no token
// is accepted: the published document is the list of keys account vouches for, and removing it
// revokes them all (failing closed rather than trusting keys nobody publishes any more).
//
// While the key cannot be read (NATS down, the bucket deleted), the set keeps the keys it has.
// Besides the watch, the key is read directly every minute. The watch rests on an ordered
// consumer that resumes from the last stream sequence it saw; if the bucket is deleted and created
// again, the sequences start over and the watch would miss updates for a while, silently.
func (k *KeySet) Watch(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	log = orDiscard(log)
	w := &keyWatch{keys: k, js: js, log: log, resync: k.resync}
	if w.resync <= 0 {
		w.resync = defaultResync
	}
	wait := watchRetryMin
	waiting := false
	for {
		started, err := w.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if started {
			wait = watchRetryMin
		}
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			if !waiting {
				log.Info("waiting for the key bucket; account creates it", "bucket", events.KeysBucket)
				waiting = true
			}
		default:
			log.Warn("public key watch interrupted; retrying", "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, watchRetryMax)
	}
}

// keyWatch is the state of one Watch.
type keyWatch struct {
	keys   *KeySet
	js     jetstream.JetStream
	kv     jetstream.KeyValue // nil until the bucket is found
	log    *slog.Logger
	resync time.Duration
	rev    uint64 // the revision of the key last applied
}

// run runs one watcher of the key until ctx is done or the watcher ends, and reports whether the
// watcher could be started. The ordered consumer beneath a watcher recreates itself after a
// reconnect; when it gives up, the updates channel closes and Watch starts a new watcher.
func (w *keyWatch) run(ctx context.Context) (bool, error) {
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
func (w *keyWatch) get(ctx context.Context) {
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
func (w *keyWatch) apply(e jetstream.KeyValueEntry) {
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

// orDiscard returns log, or a logger that discards everything when log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
