package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/service"
)

// rotateKeys adds a new signing key, pending, and publishes the new key set at once, so that
// verifiers know the new key before anyone signs with it; once published, the new key is current
// and the previous one retired (running instances switch within token.RefreshInterval). The
// retired key stays published for token.Grace(TOKEN_TTL). When the publication fails, the key
// stays pending and the current one goes on signing until a running instance publishes it.
func rotateKeys(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	k, err := token.NewKey()
	if err != nil {
		return err
	}
	stored := false
	base, _, keys, err := open(ctx, cfg, log, func(ctx context.Context, _ *postgres.Store, ks *postgres.KeyStore) error {
		if err := ks.AddSigningKey(ctx, k); err != nil {
			return err
		}
		stored = true
		return nil
	})
	if err != nil && stored {
		return fmt.Errorf("signing key %s is stored, pending: it signs once published, which running instances retry every %s: %w",
			k.ID, token.RefreshInterval, err)
	}
	if err != nil {
		return err
	}
	defer base.Close()
	if keys.Current().ID != k.ID {
		fmt.Fprintf(stdout, "signing key %s is stored, pending: another key was made current meanwhile\n", k.ID)
		return nil
	}
	fmt.Fprintf(stdout, "signing key %s is current; retired keys stay published for %s\n", k.ID, token.Grace(cfg.TokenTTL))
	return nil
}

// resealKeys seals every signing key again with the first of SIGNING_KEY_SECRETS, so that the
// secrets after it can be removed. It needs the database only.
func resealKeys(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	pool, err := pg.Open(ctx, cfg.DatabaseURL, pg.Config{})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrate(ctx, pool, cfg, log); err != nil {
		return err
	}
	n, err := postgres.NewKeyStore(pool, cfg.Sealer).Reseal(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "resealed %d signing keys with the first of SIGNING_KEY_SECRETS\n", n)
	return nil
}

// outboxStatus prints the outbox's pending and published counts.
func outboxStatus(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	pool, err := pg.Open(ctx, cfg.DatabaseURL, pg.Config{})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrate(ctx, pool, cfg, log); err != nil {
		return err
	}
	st, err := outbox.Status(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pending: %d\npublished: %d\noldest pending age: %s\n", st.Pending, st.Published, st.OldestPendingAge)
	return nil
}

// outboxRepublish publishes the kept events again, all or those since --since, with their
// original Nats-Msg-Id.
func outboxRepublish(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("outbox republish", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	since := fs.String("since", "", "republish events created at or after this RFC 3339 time")
	if err := fs.Parse(args); err != nil {
		return usageErr(err.Error())
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	var from time.Time
	if *since != "" {
		t, err := time.Parse(time.RFC3339Nano, *since)
		if err != nil {
			return usageErr(fmt.Sprintf("--since %q is not an RFC 3339 time such as 2026-11-28T09:00:00Z", *since))
		}
		from = t
	}
	base, err := service.Open(ctx, cfg.Config, log)
	if err != nil {
		return err
	}
	defer base.Close()
	if err := migrate(ctx, base.Pool, cfg, log); err != nil {
		return err
	}
	n, err := outbox.Republish(ctx, base.Pool, base.JS, from)
	fmt.Fprintf(stdout, "republished: %d\nalready in the stream (duplicates, not stored again): %d\n", n.Published, n.Duplicates)
	return err
}
