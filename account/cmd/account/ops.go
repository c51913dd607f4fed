package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/restore"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	base, _, keys, err := open(ctx, cfg, log, func(ctx context.Context, _ jetstream.JetStream, _ *postgres.Store, ks *postgres.KeyStore) error {
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

// outboxStatus prints the outbox's pending and published counts, then compares the whole stream
// with the database (the last message of each subject) and fails when the stream is ahead.
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

	nc, js, err := connectNATS(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("stream not compared with the database: %w", err)
	}
	defer nc.Close()
	stream, err := restore.ReadStream(ctx, js, restore.LastPerSubject)
	if err != nil {
		return fmt.Errorf("stream not compared with the database: %w", err)
	}
	if !stream.Exists {
		fmt.Fprintf(stdout, "stream: %s does not exist: nothing to compare\n", events.StreamName)
		return nil
	}
	users, err := postgres.New(pool).AllUsers(ctx)
	if err != nil {
		return err
	}
	c := restore.Compare(stream, users)
	if c.Behind == 0 {
		fmt.Fprintf(stdout, "stream: consistent with the database (%d users)\n", c.Users)
		return nil
	}
	fmt.Fprintf(stdout, "stream: ahead of the database: %d users (%d unknown to it); run account outbox reconcile (%s)\n",
		c.Behind, c.Unknown, restoreRunbook)
	return fmt.Errorf("the stream %s is ahead of the database: %d users (%d unknown to it); run account outbox reconcile",
		events.StreamName, c.Behind, c.Unknown)
}

// restoreRunbook names the section of the runbook on a database restored from a backup.
const restoreRunbook = `docs/operations.md, "account's database restored from a backup"`

// outboxReconcile brings the database above the stream after a restore from an older backup: it
// reads the whole stream, then gives every user the database is behind for a version above the
// stream's, keeping the database's state, and inserts the users it does not know, disabled
// (restore.Reconcile).
func outboxReconcile(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
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
	nc, js, err := connectNATS(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	// The whole history rather than the last message per subject: a higher version hidden behind
	// a lower one on its subject is still a version the replicas hold.
	stream, err := restore.ReadStream(ctx, js, restore.Whole)
	if err != nil {
		return err
	}
	if !stream.Exists {
		fmt.Fprintf(stdout, "stream: %s does not exist: nothing to reconcile\n", events.StreamName)
		return nil
	}
	fmt.Fprintf(stdout, "stream: %d messages read up to sequence %d, %d users\n", stream.Read, stream.LastSeq, len(stream.Users))
	// Restored users get a hash that no password is known to verify; they are disabled besides.
	res, err := restore.Reconcile(ctx, stream, postgres.New(pool), password.Dummy)
	for _, c := range res.Changes {
		fmt.Fprintln(stdout, describeChange(c))
	}
	fmt.Fprintf(stdout, "users bumped: %d\nusers restored disabled: %d\n", res.Bumped, res.Restored)
	if err != nil {
		return err
	}
	if n := len(res.EmailTaken); n > 0 {
		fmt.Fprintf(stdout, "users not restored, their email taken by another user: %d\n", n)
		return fmt.Errorf("%d users of the stream not restored: another user of the database has their email (first: %s); "+
			"settle them by hand (%s)", n, res.EmailTaken[0], restoreRunbook)
	}
	return nil
}

// describeChange is the line of reconcile's output about a user it changed: what the stream held,
// which the replicas hold until the user's new event reaches them, and what they get instead.
func describeChange(c restore.Change) string {
	u, s := c.User, c.Stream
	if c.Done == postgres.RestoredDisabled {
		return fmt.Sprintf("restored %s %s disabled at version %d, roles %s (registered after the backup; the stream had version %d, status %s)",
			u.ID, u.Email, u.Version, strings.Join(u.Roles, ","), s.Version, s.Status)
	}
	return fmt.Sprintf("bumped %s %s to version %d, roles %s, status %s (the stream had version %d, roles %s, status %s)",
		u.ID, u.Email, u.Version, strings.Join(u.Roles, ","), u.Status, s.Version, strings.Join(s.Roles, ","), s.Status)
}

// commandConnectTimeout bounds a command's connection to NATS: it fails with one line rather
// than hang.
const commandConnectTimeout = 3 * time.Second

// connectNATS connects a command to NATS as account; the caller closes the connection.
func connectNATS(ctx context.Context, cfg config, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := bus.Connect(ctx, cfg.Conn("account-cli"), commandConnectTimeout, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
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
