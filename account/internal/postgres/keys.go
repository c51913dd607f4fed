package postgres

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/jackc/pgx/v5"
)

// lockKeys serialises changes of signing_keys between instances and the operator command. The
// two-key form of the advisory lock cannot collide with the one-bigint locks of the shared
// libraries (migrations, outbox relay).
const lockKeys = `SELECT pg_advisory_xact_lock(hashtext('account'), hashtext('signing_keys'))`

type keyRow struct {
	Kid        string     `db:"kid"`
	PrivateKey []byte     `db:"private_key"`
	CreatedAt  time.Time  `db:"created_at"`
	RetiredAt  *time.Time `db:"retired_at"`
}

func (r keyRow) key() account.SigningKey {
	k := account.SigningKey{
		ID:        r.Kid,
		Private:   ed25519.NewKeyFromSeed(r.PrivateKey),
		CreatedAt: r.CreatedAt.UTC(),
	}
	if r.RetiredAt != nil {
		k.RetiredAt = r.RetiredAt.UTC()
	}
	return k
}

// SigningKeys returns the keys whose public keys are published, newest first: every key not
// retired, and every key retired less than grace ago (grace covers the lifetime of the last
// tokens it signed). The first key not retired is the current one.
func (s *Store) SigningKeys(ctx context.Context, grace time.Duration) ([]account.SigningKey, error) {
	const q = `SELECT kid, private_key, created_at, retired_at FROM signing_keys
		WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
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
		if len(r.PrivateKey) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %s: seed of %d bytes", r.Kid, len(r.PrivateKey))
		}
		keys[i] = r.key()
	}
	return keys, nil
}

// EnsureSigningKey stores newKey() when no key is current (the first start), and reports whether
// it did. Instances starting together create one key between them.
func (s *Store) EnsureSigningKey(ctx context.Context, newKey func() (account.SigningKey, error)) (bool, error) {
	const exists = `SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)`
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
		return insertKey(ctx, tx, k)
	})
	if err != nil {
		return false, dbError("ensure signing key", err)
	}
	return created, nil
}

// RotateSigningKey retires every current key and stores k as the new current key, in one
// transaction.
func (s *Store) RotateSigningKey(ctx context.Context, k account.SigningKey) error {
	const retire = `UPDATE signing_keys SET retired_at = clock_timestamp() WHERE retired_at IS NULL`
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockKeys); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, retire); err != nil {
			return err
		}
		return insertKey(ctx, tx, k)
	})
	if err != nil {
		return dbError("rotate signing key", err)
	}
	return nil
}

func insertKey(ctx context.Context, tx pgx.Tx, k account.SigningKey) error {
	const q = `INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES ($1, $2, $3, clock_timestamp())`
	_, err := tx.Exec(ctx, q, k.ID, []byte(k.Private.Seed()), []byte(k.Public()))
	return err
}
