package account

import (
	"crypto/ed25519"
	"time"
)

// SigningKey is an Ed25519 key that signs access tokens. Its ID is the kid of its public JWK.
//
// A key is pending from its creation until a JWKS holding it has been published (its public key is
// published, it signs nothing yet), then current (it signs), then retired (published until the
// tokens it signed have expired, signing nothing).
type SigningKey struct {
	ID        string
	Private   ed25519.PrivateKey
	CreatedAt time.Time
	// ActivatedAt is when the key became current; zero while it is pending.
	ActivatedAt time.Time
	// RetiredAt is when the key stopped signing; zero while it may sign.
	RetiredAt time.Time
}

// Public returns the public half of k.
func (k SigningKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// Pending reports whether k waits for a published JWKS before it may sign.
func (k SigningKey) Pending() bool { return k.ActivatedAt.IsZero() }

// Retired reports whether k no longer signs.
func (k SigningKey) Retired() bool { return !k.RetiredAt.IsZero() }

// Current reports whether k signs.
func (k SigningKey) Current() bool { return !k.Pending() && !k.Retired() }

// State names where k is in its life: "pending", "current" or "retired".
func (k SigningKey) State() string {
	switch {
	case k.Pending():
		return "pending"
	case k.Retired():
		return "retired"
	}
	return "current"
}
