package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/restore"
	"github.com/authmesh/account/internal/server"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/service"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// serve runs the service until ctx is done.
func serve(ctx context.Context, cfg config, log *slog.Logger, args []string, _ io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	log.Info("starting", cfg.logAttrs()...)
	hasher := password.NewHasher(0, password.DefaultWait)
	// Before any change of a user (the bootstrap's included) and before the key set is published:
	// a database behind the stream must change nothing until it is reconciled.
	before := func(ctx context.Context, js jetstream.JetStream, users *postgres.Store, keys *postgres.KeyStore) error {
		if err := checkStream(ctx, js, users, log); err != nil {
			return err
		}
		if cfg.AdminEmail == "" {
			return nil
		}
		if err := bootstrapAdmin(ctx, users, keys, hasher, cfg.AdminEmail, cfg.AdminPassword, log); err != nil {
			return fmt.Errorf("bootstrap admin: %w", err)
		}
		return nil
	}
	base, store, keys, err := open(ctx, cfg, log, before)
	if err != nil {
		return err
	}
	defer base.Close()

	mux := server.New(server.Config{
		Log:     log,
		Store:   store,
		Hasher:  hasher,
		Keys:    keys,
		Signer:  &token.Signer{Keys: keys, Issuer: cfg.TokenIssuer, TTL: cfg.TokenTTL},
		Metrics: base.Metrics,

		PublicURL:      cfg.PublicURL,
		TrustedProxies: cfg.TrustedProxies,
	})
	relay := outbox.NewRelay(outbox.RelayConfig{Pool: base.Pool, JS: base.JS, Log: log, Metrics: base.Metrics})
	return base.Serve(ctx, mux, nil, relay.Run, keys.Run, pruneLoginFailures(store, log))
}

// setup is a command's own step at start: after the migrations, the stream and the first signing
// key, before the keys are loaded and published.
type setup func(ctx context.Context, js jetstream.JetStream, users *postgres.Store, keys *postgres.KeyStore) error

// streamCheckTimeout bounds the start-up comparison of the stream with the database.
const streamCheckTimeout = 10 * time.Second

// checkStream refuses to start on a database that is behind the stream USERS (restore.Check), as
// after a restore from a backup older than the stream: account would publish versions that every
// replica ignores as stale.
func checkStream(ctx context.Context, js jetstream.JetStream, users *postgres.Store, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, streamCheckTimeout)
	defer cancel()
	warning, err := restore.Check(ctx, js, users)
	if errors.Is(err, restore.ErrBehind) {
		return fmt.Errorf("refusing to start: %w; account would publish versions that every replica ignores as stale. "+
			"Was the database restored from an older backup? Run account outbox status, then account outbox reconcile (%s)",
			err, restoreRunbook)
	}
	if err != nil {
		return fmt.Errorf("compare the stream with the database: %w", err)
	}
	if warning != "" {
		log.Warn(warning)
	}
	return nil
}

// open opens the database and NATS, applies the migrations, seals plaintext keys, declares the
// stream and the key bucket, creates a signing key on the first start, runs before (unless nil),
// and publishes the public keys. The caller closes base.
func open(ctx context.Context, cfg config, log *slog.Logger, before setup) (*service.Base, *postgres.Store, *token.Keys, error) {
	base, err := service.Open(ctx, cfg.Config, log)
	if err != nil {
		return nil, nil, nil, err
	}
	store, keys, err := prepare(ctx, base, cfg, log, before)
	if err != nil {
		base.Close()
		return nil, nil, nil, err
	}
	return base, store, keys, nil
}

func prepare(ctx context.Context, base *service.Base, cfg config, log *slog.Logger, before setup) (*postgres.Store, *token.Keys, error) {
	if err := migrate(ctx, base.Pool, cfg, log); err != nil {
		return nil, nil, err
	}
	if _, err := bus.EnsureStream(ctx, base.JS); err != nil {
		return nil, nil, err
	}
	kv, err := bus.EnsureKeyBucket(ctx, base.JS)
	if err != nil {
		return nil, nil, err
	}
	store := postgres.New(base.Pool)
	keyStore := postgres.NewKeyStore(base.Pool, cfg.Sealer)
	created, err := keyStore.EnsureSigningKey(ctx, token.NewKey)
	if err != nil {
		return nil, nil, err
	}
	if created {
		log.Info("signing key created")
	}
	if before != nil {
		if err := before(ctx, base.JS, store, keyStore); err != nil {
			return nil, nil, err
		}
	}
	keys, err := newKeys(ctx, keyStore, kv, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return store, keys, nil
}

// migrate applies the migrations to the database of pool, and seals the signing keys that
// versions before sealing stored in plaintext. Every command that opens the database runs it.
func migrate(ctx context.Context, pool *pgxpool.Pool, cfg config, log *slog.Logger) error {
	if err := postgres.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	n, err := postgres.NewKeyStore(pool, cfg.Sealer).SealPlaintext(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		log.Warn("sealed the signing keys that an older version stored in plaintext; copies of the database "+
			"made before hold them: rotate the signing key (account keys rotate)", "keys", n)
	}
	return nil
}

func newKeys(ctx context.Context, store *postgres.KeyStore, kv jetstream.KeyValue, cfg config, log *slog.Logger) (*token.Keys, error) {
	keys, err := token.NewKeys(store, kv, cfg.TokenTTL, log)
	if err != nil {
		return nil, err
	}
	if err := keys.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	return keys, nil
}

// bootstrapAttempts bounds how often bootstrapAdmin looks again at a user that changed under it.
const bootstrapAttempts = 5

// bootstrapAdmin makes the user with email an active admin whose password is pw. A missing user is
// created so. An existing one, whoever registered the email first, is reset in place (same id,
// through the outbox); when that takes the account over (a new password, or the admin role
// granted), every signing key is revoked in the same transaction, so that no token issued before
// works anywhere once the keys are next published, which the caller does next. An active admin
// whose password verifies is left as it is. Instances starting together converge on one user and
// one reset.
func bootstrapAdmin(ctx context.Context, users *postgres.Store, keys *postgres.KeyStore, hasher *password.Hasher, email, pw string, log *slog.Logger) error {
	for range bootstrapAttempts {
		done, err := bootstrapOnce(ctx, users, keys, hasher, email, pw, log)
		if err != nil || done {
			return err
		}
	}
	return fmt.Errorf("user %s kept changing during %d attempts", email, bootstrapAttempts)
}

// bootstrapOnce is one attempt of bootstrapAdmin; it reports false when the user changed under it
// (another instance created or reset it), to look again.
func bootstrapOnce(ctx context.Context, users *postgres.Store, keys *postgres.KeyStore, hasher *password.Hasher, email, pw string, log *slog.Logger) (bool, error) {
	u, hash, err := users.Credentials(ctx, email)
	if errors.Is(err, account.ErrNotFound) {
		h, err := hasher.Hash(ctx, pw)
		if err != nil {
			return false, err
		}
		u, err = users.CreateUser(ctx, postgres.NewUser{
			Email:        email,
			DisplayName:  "Administrator",
			PasswordHash: h,
			Roles:        []string{events.RoleAdmin},
		})
		if errors.Is(err, account.ErrEmailTaken) { // another instance created it just now: look again
			return false, nil
		}
		if err != nil {
			return false, err
		}
		log.Info("bootstrap admin created", "user_id", u.ID, "email", email)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	verified, err := hasher.Verify(ctx, pw, hash)
	if err != nil && !errors.Is(err, password.ErrMalformed) { // a malformed hash verifies nothing: reset it
		return false, err
	}
	admin := u.HasRole(events.RoleAdmin)
	if verified && admin && u.Status == events.StatusActive {
		return true, nil
	}
	r := postgres.AdminReset{ID: u.ID, Verified: hash}
	if !verified {
		if r.Hash, err = hasher.Hash(ctx, pw); err != nil {
			return false, err
		}
	}
	if !verified || !admin {
		k, err := token.NewKey()
		if err != nil {
			return false, err
		}
		sealed := keys.Seal(k)
		r.Revoke = &sealed
	}
	res, err := users.ResetAdmin(ctx, r)
	if errors.Is(err, postgres.ErrStale) || errors.Is(err, account.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	attrs := []any{"user_id", u.ID, "email", email, "version", res.User.Version, "password_reset", res.PasswordChanged,
		"admin_granted", res.AdminGranted, "activated", res.Activated, "revoked_keys", res.RevokedKeys}
	if res.PasswordChanged || res.AdminGranted {
		log.Warn("bootstrap admin took over an existing account: every signing key is revoked, "+
			"so tokens issued before are refused everywhere", attrs...)
	} else {
		log.Info("bootstrap admin reset", attrs...)
	}
	return true, nil
}

// pruneInterval is how often old failed logins are deleted.
const pruneInterval = time.Minute

// pruneLoginFailures deletes failed logins that no limit counts any more, every pruneInterval,
// until ctx is done. Every instance prunes; deleting twice is harmless.
func pruneLoginFailures(store *postgres.Store, log *slog.Logger) service.Worker {
	keep := max(account.EmailLimit.Window, account.AddressLimit.Window)
	return func(ctx context.Context) error {
		t := time.NewTicker(pruneInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			n, err := store.PruneLoginFailures(ctx, keep)
			if err != nil && ctx.Err() == nil {
				log.Warn("prune login failures", "err", err)
				continue
			}
			if n > 0 {
				log.Debug("pruned login failures", "rows", n)
			}
		}
	}
}
