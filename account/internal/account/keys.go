package account

import (
	"crypto/ed25519"
	"time"
)

// SigningKey is an Ed25519 key that signs access tokens. Its ID is the kid of its public JWK.
type SigningKey struct {
	ID        string
	Private   ed25519.PrivateKey
	CreatedAt time.Time
	// RetiredAt is when the key stopped signing; zero while it may sign.
	RetiredAt time.Time
}

// Public returns the public half of k.
func (k SigningKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// Retired reports whether k no longer signs.
func (k SigningKey) Retired() bool { return !k.RetiredAt.IsZero() }
