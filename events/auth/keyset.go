package auth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync/atomic"
)

// KeySet is the set of public keys a Verifier accepts, safe for concurrent use and replaceable
// while in use (key rotation). The zero value is an empty set. A KeyWatch keeps one current.
type KeySet struct {
	keys atomic.Pointer[map[string]ed25519.PublicKey]
	// generation counts the replacements of keys. A verified token is remembered with the
	// generation it was verified under (tokenCache), and forgotten once the set changes: a
	// rotation that drops its kid must not leave it honoured.
	generation atomic.Uint64
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
	k.generation.Add(1) // after the store (see gen)
	return nil
}

// clear empties the set.
func (k *KeySet) clear() {
	k.keys.Store(&map[string]ed25519.PublicKey{})
	k.generation.Add(1)
}

// gen returns the set's generation. Read it before the keys a verification uses: the keys are
// stored before the generation moves on, so a token verified with keys older than the
// generation read is never mistaken for one verified with the newer keys.
func (k *KeySet) gen() uint64 { return k.generation.Load() }

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

// ErrNoKeys is Ready's answer while the set is empty.
var ErrNoKeys = errors.New("no public keys yet")

// Ready reports whether the set holds a key (else ErrNoKeys): a service that verifies tokens is
// not ready before, since it would refuse every one. It is the readiness check of the keys.
func (k *KeySet) Ready(context.Context) error {
	if k.Len() == 0 {
		return ErrNoKeys
	}
	return nil
}
