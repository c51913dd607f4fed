// Package seal encrypts account's signing keys at rest. A Sealer holds the keys derived from the
// secrets of SIGNING_KEY_SECRETS: the first seals, every one opens, so that the secret can be
// rotated (prepend a new one, re-seal, drop the old one). A sealed value is bound to a label, the
// key's kid, so that a sealed value moved to another row does not open there.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MinSecret is the least number of characters of a secret.
const MinSecret = 32

// info separates the keys derived here from anything else derived from the same secret. Changing
// it makes every sealed value unreadable.
const info = "authmesh account signing key seal v1"

// ErrOpen is returned by Open when no secret opens the sealed value: it was sealed with a secret
// no longer listed, for another label, or it was altered.
var ErrOpen = errors.New("no secret opens the sealed value")

// Sealer seals with the first secret and opens with any. It is safe for concurrent use.
type Sealer struct {
	aeads []cipher.AEAD
}

// New returns a sealer of secrets, the first of which seals. It refuses an empty list and any
// secret shorter than MinSecret characters; its errors never quote a secret.
func New(secrets []string) (*Sealer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no secret")
	}
	s := &Sealer{}
	for i, secret := range secrets {
		if n := utf8.RuneCountInString(secret); n < MinSecret {
			return nil, fmt.Errorf("secret %d of %d has %d characters, want at least %d", i+1, len(secrets), n, MinSecret)
		}
		key, err := hkdf.Key(sha256.New, []byte(secret), nil, info, 32)
		if err != nil {
			return nil, fmt.Errorf("derive key: %w", err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("cipher: %w", err)
		}
		// A random 96-bit nonce per seal, prepended by the library: account seals a handful of
		// keys in its lifetime, far below the bound where random nonces could repeat.
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, fmt.Errorf("cipher: %w", err)
		}
		s.aeads = append(s.aeads, aead)
	}
	return s, nil
}

// Parse splits a comma-separated list of secrets (SIGNING_KEY_SECRETS), trimming the space around
// each, and returns their sealer.
func Parse(list string) (*Sealer, error) {
	var secrets []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			secrets = append(secrets, s)
		}
	}
	return New(secrets)
}

// Len is the number of secrets; 0 for a nil Sealer.
func (s *Sealer) Len() int {
	if s == nil {
		return 0
	}
	return len(s.aeads)
}

// Seal encrypts and authenticates plaintext, bound to label, with the first secret.
func (s *Sealer) Seal(plaintext []byte, label string) []byte {
	return s.aeads[0].Seal(nil, nil, plaintext, []byte(label))
}

// Open returns the plaintext of sealed, bound to label, and the index of the secret that opened
// it (0 for the first); ErrOpen when none does.
func (s *Sealer) Open(sealed []byte, label string) ([]byte, int, error) {
	for i, aead := range s.aeads {
		if len(sealed) < aead.NonceSize()+aead.Overhead() {
			break
		}
		if p, err := aead.Open(nil, nil, sealed, []byte(label)); err == nil {
			return p, i, nil
		}
	}
	return nil, 0, ErrOpen
}
