package postgres

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// lockKeys serialises changes of signing_keys between instances and the operator commands. The
// two-key form of the advisory lock cannot collide with the one-bigint locks of the shared
// libraries (migrations, outbox relay).
const lockKeys = `SELECT pg_advisory_xact_lock(hashtext('account'), hashtext('signing_keys'))`

// Sealer seals the private keys at rest (seal.Sealer): Seal with the first secret, Open with any,
// both bound to a label (the kid).
type Sealer interface {
	Seal(plaintext []byte, label string) []byte
	Open(sealed []byte, label string) (plaintext []byte, secret int, err error)
}

// KeyStore reads and writes account's signing keys. A private key is stored only sealed by its
// sealer, bound to its kid: a copy of the database, or a row moved under another kid, signs
// nothing. It is safe for concurrent use.
type KeyStore struct {
	pool   *pgxpool.Pool
	sealer Sealer
}

// NewKeyStore returns the key store on pool, whose schema Migrate has applied, sealing with sealer.
func NewKeyStore(pool *pgxpool.Pool, sealer Sealer) *KeyStore {
	return &KeyStore{pool: pool, sealer: sealer}
}

// SealedKey is a signing key sealed for storage, see KeyStore.Seal.
type SealedKey struct {
	kid    string
	sealed []byte
	public []byte
}

// Seal seals k for storage under its kid.
func (s *KeyStore) Seal(k account.SigningKey) SealedKey {
	return SealedKey{kid: k.ID, sealed: s.sealer.Seal(k.Private.Seed(), k.ID), public: k.Public()}
}

type keyRow struct {
	Kid         string     `db:"kid"`
	SealedKey   []byte     `db:"sealed_key"`
	PublicKey   []byte     `db:"public_key"`
	CreatedAt   time.Time  `db:"created_at"`
	ActivatedAt *time.Time `db:"activated_at"`
	RetiredAt   *time.Time `db:"retired_at"`
}

// ErrUnsealed is returned for a key that no secret of the sealer opens as the key of its row.
var ErrUnsealed = errors.New("signing key does not open")

// open unseals the seed of the row kid, checking that it is the private half of the row's public
// key, and returns the key and the index of the secret that opened it.
func (s *KeyStore) open(kid string, sealed, public []byte) (ed25519.PrivateKey, int, error) {
	if sealed == nil {
		return nil, 0, fmt.Errorf("%w: signing key %s is not sealed yet", ErrUnsealed, kid)
	}
	seed, secret, err := s.sealer.Open(sealed, kid)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: signing key %s: %w (sealed with a secret that SIGNING_KEY_SECRETS no longer lists, or altered)", ErrUnsealed, kid, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, 0, fmt.Errorf("%w: signing key %s: seed of %d bytes", ErrUnsealed, kid, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), public) {
		return nil, 0, fmt.Errorf("%w: signing key %s is not the private half of its public key", ErrUnsealed, kid)
	}
	return priv, secret, nil
}

func (s *KeyStore) key(r keyRow) (account.SigningKey, error) {
	priv, _, err := s.open(r.Kid, r.SealedKey, r.PublicKey)
	if err != nil {
		return account.SigningKey{}, err
	}
	k := account.SigningKey{ID: r.Kid, Private: priv, CreatedAt: r.CreatedAt.UTC()}
	if r.ActivatedAt != nil {
		k.ActivatedAt = r.ActivatedAt.UTC()
	}
	if r.RetiredAt != nil {
		k.RetiredAt = r.RetiredAt.UTC()
	}
	return k, nil
}

// SigningKeys returns the keys whose public keys are published, newest first: every pending and
// current key, and every key retired less than grace ago (grace covers the lifetime of the last
// tokens it signed); never a revoked key. It fails with ErrUnsealed when a key does not open.
func (s *KeyStore) SigningKeys(ctx context.Context, grace time.Duration) ([]account.SigningKey, error) {
	const q = `SELECT kid, sealed_key, public_key, created_at, activated_at, retired_at FROM signing_keys
		WHERE revoked_at IS NULL AND (retired_at IS NULL OR retired_at > now() - make_interval(secs => $1))
		ORDER BY created_at DESC, kid`
	rows, err := s.pool.Query(ctx, q, grace.Seconds())
	if err != nil {
		return nil, dbError("signing keys", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
	if err != nil {
		return nil, dbError("signing keys", err)
	}
	keys := make([]account.SigningKey, len(list))
	for i, r := range list {
		if keys[i], err = s.key(r); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// EnsureSigningKey stores newKey(), pending, when no key is current or pending (the first start),
// and reports whether it did. Instances starting together create one key between them.
func (s *KeyStore) EnsureSigningKey(ctx context.Context, newKey func() (account.SigningKey, error)) (bool, error) {
	const exists = `SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL AND revoked_at IS NULL)`
	var created bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockKeys); err != nil {
			return err
		}
		var ok bool
		if err := tx.QueryRow(ctx, exists).Scan(&ok); err != nil || ok {
			return err
		}
		k, err := newKey()
		if err != nil {
			return err
		}
		created = true
		return insertKey(ctx, tx, s.Seal(k))
	})
	if err != nil {
		return false, dbError("ensure signing key", err)
	}
	return created, nil
}

// AddSigningKey stores k as a pending key: published from the next refresh of the keys on, it
// becomes current once a JWKS holding it has been published (PromoteSigningKey).
func (s *KeyStore) AddSigningKey(ctx context.Context, k account.SigningKey) error {
	sk := s.Seal(k)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockKeys); err != nil {
			return err
		}
		return insertKey(ctx, tx, sk)
	})
	if err != nil {
		return dbError("add signing key", err)
	}
	return nil
}

// PromoteSigningKey makes the pending key kid current, and reports whether it did, in one
// transaction: the current key is retired at this moment (its grace starts now), and pending keys
// older than kid, which never signed, are revoked. The caller has published a JWKS holding kid.
// A key that is no longer pending (another instance promoted it, or a newer key, or revoked it)
// is left as it is.
func (s *KeyStore) PromoteSigningKey(ctx context.Context, kid string) (bool, error) {
	const (
		pending = `SELECT created_at FROM signing_keys WHERE kid = $1 AND activated_at IS NULL AND revoked_at IS NULL`
		retire  = `UPDATE signing_keys SET retired_at = clock_timestamp()
			WHERE activated_at IS NOT NULL AND retired_at IS NULL AND revoked_at IS NULL`
		drop = `UPDATE signing_keys SET revoked_at = clock_timestamp()
			WHERE activated_at IS NULL AND revoked_at IS NULL AND created_at < $1`
		activate = `UPDATE signing_keys SET activated_at = clock_timestamp() WHERE kid = $1`
	)
	var promoted bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockKeys); err != nil {
			return err
		}
		var created time.Time
		err := tx.QueryRow(ctx, pending, kid).Scan(&created)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, retire); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, drop, created); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, activate, kid); err != nil {
			return err
		}
		promoted = true
		return nil
	})
	if err != nil {
		return false, dbError("promote signing key", err)
	}
	return promoted, nil
}

// revokeKeys revokes every key, in tx, and stores k as the only pending one: the tokens signed
// so far verify nowhere once the keys are next published, and k signs once they are. It returns
// how many keys it revoked.
func revokeKeys(ctx context.Context, tx pgx.Tx, k SealedKey) (int64, error) {
	const revoke = `UPDATE signing_keys SET revoked_at = clock_timestamp() WHERE revoked_at IS NULL`
	if _, err := tx.Exec(ctx, lockKeys); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, revoke)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), insertKey(ctx, tx, k)
}

func insertKey(ctx context.Context, tx pgx.Tx, k SealedKey) error {
	const q = `INSERT INTO signing_keys (kid, sealed_key, public_key, created_at) VALUES ($1, $2, $3, clock_timestamp())`
	_, err := tx.Exec(ctx, q, k.kid, k.sealed, k.public)
	return err
}

// SealPlaintext seals the plaintext seeds that versions before sealing stored, and clears them,
// in one transaction; it returns how many it sealed. Run it after Migrate, before anything reads
// or changes the keys.
func (s *KeyStore) SealPlaintext(ctx context.Context) (int64, error) {
	const (
		q      = `SELECT kid, private_key, public_key FROM signing_keys WHERE private_key IS NOT NULL FOR UPDATE`
		update = `UPDATE signing_keys SET sealed_key = $2, private_key = NULL WHERE kid = $1`
	)
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockKeys); err != nil {
			return err
		}
		type plainRow struct {
			Kid        string `db:"kid"`
			PrivateKey []byte `db:"private_key"`
			PublicKey  []byte `db:"public_key"`
		}
		rows, err := tx.Query(ctx, q)
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[plainRow])
		if err != nil {
			return err
		}
		for _, r := range list {
			if len(r.PrivateKey) != ed25519.SeedSize {
				return fmt.Errorf("signing key %s: seed of %d bytes", r.Kid, len(r.PrivateKey))
			}
			// As when a sealed key is opened: the seed must be the row's public key's.
			if !ed25519.NewKeyFromSeed(r.PrivateKey).Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(r.PublicKey)) {
				return fmt.Errorf("signing key %s: the seed does not match its public key", r.Kid)
			}
			if _, err := tx.Exec(ctx, update, r.Kid, s.sealer.Seal(r.PrivateKey, r.Kid)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, dbError("seal plaintext signing keys", err)
	}
	return n, nil
}

// Reseal seals every stored key again with the first secret, in one transaction, after the
// secrets were rotated; it returns how many keys it resealed. It changes nothing and fails with
// ErrUnsealed when a key does not open.
func (s *KeyStore) Reseal(ctx context.Context) (int64, error) {
	const (
		q      = `SELECT kid, sealed_key, public_key FROM signing_keys WHERE sealed_key IS NOT NULL ORDER BY created_at FOR UPDATE`
		update = `UPDATE signing_keys SET sealed_key = $2 WHERE kid = $1`
	)
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockKeys); err != nil {
			return err
		}
		type sealedRow struct {
			Kid       string `db:"kid"`
			SealedKey []byte `db:"sealed_key"`
			PublicKey []byte `db:"public_key"`
		}
		rows, err := tx.Query(ctx, q)
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[sealedRow])
		if err != nil {
			return err
		}
		for _, r := range list {
			priv, _, err := s.open(r.Kid, r.SealedKey, r.PublicKey)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, update, r.Kid, s.sealer.Seal(priv.Seed(), r.Kid)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if errors.Is(err, ErrUnsealed) {
		return 0, err
	}
	if err != nil {
		return 0, dbError("reseal signing keys", err)
	}
	return n, nil
}
