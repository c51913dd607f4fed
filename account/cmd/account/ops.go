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
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/service"
)

// rotateKeys adds a new signing key, makes it current, and publishes the new key set at once, so
// that verifiers know the new key before any running instance signs with it (instances switch
// within token.RefreshInterval, publishing first). The retired key stays published for
// token.Grace(TOKEN_TTL).
func rotateKeys(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	base, store, _, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer base.Close()
	k, err := token.NewKey()
	if err != nil {
		return err
	}
	if err := store.RotateSigningKey(ctx, k); err != nil {
		return err
	}
	kv, err := bus.EnsureKeyBucket(ctx, base.JS)
	if err != nil {
		return err
	}
	if _, err := newKeys(ctx, store, kv, cfg, log); err != nil {
		return fmt.Errorf("publish keys (the rotation is stored; running instances publish it within %s): %w", token.RefreshInterval, err)
	}
	fmt.Fprintf(stdout, "signing key %s is current; retired keys stay published for %s\n", k.ID, token.Grace(cfg.TokenTTL))
	return nil
}

// outboxStatus prints the outbox's pending and published counts.
func outboxStatus(ctx context.Context, cfg config, _ *slog.Logger, args []string, stdout io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	pool, err := service.OpenDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
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
	if err := postgres.Migrate(ctx, base.Pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	n, err := outbox.Republish(ctx, base.Pool, base.JS, from)
	fmt.Fprintf(stdout, "republished: %d\nalready in the stream (duplicates, not stored again): %d\n", n.Published, n.Duplicates)
	return err
}
