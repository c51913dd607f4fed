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
	"github.com/authmesh/account/internal/server"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/service"
	"github.com/nats-io/nats.go/jetstream"
)

// serve runs the service until ctx is done.
func serve(ctx context.Context, cfg config, log *slog.Logger, args []string, _ io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	log.Info("starting", cfg.logAttrs()...)
	base, store, keys, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer base.Close()

	hasher := password.NewHasher(0, password.DefaultWait)
	if cfg.AdminEmail != "" {
		if err := bootstrapAdmin(ctx, store, hasher, cfg.AdminEmail, cfg.AdminPassword, log); err != nil {
			return fmt.Errorf("bootstrap admin: %w", err)
		}
	}
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

// open opens the database and NATS, applies the migrations, declares the stream and the key
// bucket, creates a signing key on the first start, and publishes the public keys. The caller
// closes base.
func open(ctx context.Context, cfg config, log *slog.Logger) (*service.Base, *postgres.Store, *token.Keys, error) {
	base, err := service.Open(ctx, cfg.Config, log)
	if err != nil {
		return nil, nil, nil, err
	}
	store, keys, err := prepare(ctx, base, cfg, log)
	if err != nil {
		base.Close()
		return nil, nil, nil, err
	}
	return base, store, keys, nil
}

func prepare(ctx context.Context, base *service.Base, cfg config, log *slog.Logger) (*postgres.Store, *token.Keys, error) {
	if err := postgres.Migrate(ctx, base.Pool); err != nil {
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	if _, err := bus.EnsureStream(ctx, base.JS); err != nil {
		return nil, nil, err
	}
	kv, err := bus.EnsureKeyBucket(ctx, base.JS)
	if err != nil {
		return nil, nil, err
	}
	store := postgres.New(base.Pool)
	created, err := store.EnsureSigningKey(ctx, token.NewKey)
	if err != nil {
		return nil, nil, err
	}
	if created {
		log.Info("signing key created")
	}
	keys, err := newKeys(ctx, store, kv, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return store, keys, nil
}

func newKeys(ctx context.Context, store *postgres.Store, kv jetstream.KeyValue, cfg config, log *slog.Logger) (*token.Keys, error) {
	keys, err := token.NewKeys(store, kv, cfg.TokenTTL, log)
	if err != nil {
		return nil, err
	}
	if err := keys.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	return keys, nil
}

// bootstrapAdmin makes sure the user with email exists and holds the role admin. A new user gets
// password; an existing one keeps theirs, and their status: the bootstrap creates an admin, it
// does not undo what an operator did since. Instances starting together converge on one user.
func bootstrapAdmin(ctx context.Context, store *postgres.Store, hasher *password.Hasher, email, pw string, log *slog.Logger) error {
	u, err := store.UserByEmail(ctx, email)
	if errors.Is(err, account.ErrNotFound) {
		hash, herr := hasher.Hash(ctx, pw)
		if herr != nil {
			return herr
		}
		u, err = store.CreateUser(ctx, postgres.NewUser{
			Email:        email,
			DisplayName:  "Administrator",
			PasswordHash: hash,
			Roles:        []string{events.RoleAdmin},
		})
		if err == nil {
			log.Info("bootstrap admin created", "user_id", u.ID, "email", email)
			return nil
		}
		if errors.Is(err, account.ErrEmailTaken) { // another instance created it just now
			u, err = store.UserByEmail(ctx, email)
		}
	}
	if err != nil {
		return err
	}
	if u.HasRole(events.RoleAdmin) {
		return nil
	}
	u, err = store.GrantRole(ctx, u.ID, events.RoleAdmin)
	if err != nil {
		return err
	}
	log.Info("bootstrap admin granted the admin role", "user_id", u.ID, "email", email, "version", u.Version)
	return nil
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
