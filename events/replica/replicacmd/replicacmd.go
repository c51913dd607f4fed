// Package replicacmd is the operator's command line for a service's user replica, the same in
// every service that keeps one (blog, shop): `<service> replica status | rebuild | verify |
// dead-letters`. The service's main hands it the arguments after "replica".
//
// Exit codes: 0 success (verify: the replica equals the stream), 1 failure (verify: differences
// found; dead-letters retry: some still fail; rebuild: interrupted), 2 bad usage.
package replicacmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/service"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Exit codes of Run.
const (
	ExitOK      = 0 // done; verify found no difference
	ExitFailure = 1 // failed, interrupted, differences found, dead letters still failing
	ExitUsage   = 2 // bad command line
)

// Bounds on reaching the servers: a command fails with one line rather than hang.
const (
	connectTimeout = 3 * time.Second
	pingTimeout    = 5 * time.Second
)

// Run runs the replica command of args (the arguments after "replica") for the service whose
// configuration defaults are defaults (the ones its serve command uses: Name, HTTPAddr,
// DatabaseURL), reading DATABASE_URL and NATS_URL through getenv. It writes results to stdout,
// errors (one line each) to stderr, and returns the process's exit code.
func Run(ctx context.Context, defaults service.Config, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{name: defaults.Name, defaults: defaults, getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, c.usage())
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "status":
		return c.status(ctx, rest)
	case "rebuild":
		return c.rebuild(ctx, rest)
	case "verify":
		return c.verify(ctx, rest)
	case "dead-letters":
		return c.deadLetters(ctx, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, c.usage())
		return ExitOK
	}
	fmt.Fprintf(stderr, "%s replica: unknown command %q\n%s", c.name, cmd, c.usage())
	return ExitUsage
}

// cli is one run of the command line.
type cli struct {
	name     string
	defaults service.Config
	getenv   func(string) string
	stdout   io.Writer
	stderr   io.Writer
}

func (c *cli) usage() string {
	return strings.ReplaceAll(`usage: SVC replica <command> [flags]

Operator commands for SVC's user replica (see docs/operations.md).

commands:
  status [--json]                             stream last sequence, last applied sequence, lag,
                                              users, dead letters
  rebuild [--from-seq N | --since RFC3339]    build a new copy of the replica from the stream and
                                              swap it in while SVC keeps serving
  verify                                      compare the replica with the stream (exit 1 on differences)
  dead-letters [list [--json] | retry [--seq N]]
                                              show events that could not be applied; apply them again

Run "SVC replica <command> --help" for a command's flags.
Environment: DATABASE_URL, NATS_URL (the service's defaults when unset).
Exit codes: 0 ok, 1 failure or differences, 2 usage.
`, "SVC", c.name)
}

// parse parses args into fs. It returns -1 to go on, or the exit code to return: --help prints
// the usage to stdout (0), a bad flag or a stray argument prints it to stderr (2).
func (c *cli) parse(fs *flag.FlagSet, args []string, synopsis string) int {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	help := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s replica %s\n", c.name, synopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		help(c.stdout)
		return ExitOK
	case err != nil:
		fmt.Fprintf(c.stderr, "%s replica %s: %v\n", c.name, fs.Name(), err)
		help(c.stderr)
		return ExitUsage
	case fs.NArg() > 0:
		fmt.Fprintf(c.stderr, "%s replica %s: unexpected argument %q\n", c.name, fs.Name(), fs.Arg(0))
		help(c.stderr)
		return ExitUsage
	}
	return -1
}

// fail prints err as one line and returns ExitFailure.
func (c *cli) fail(cmd string, err error) int {
	msg := err.Error()
	if pg.UndefinedTable(err) {
		msg = "the replica's tables do not exist in this database: has " + c.name + " ever started on it? (" + msg + ")"
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		msg = "the stream does not exist on this NATS server: is NATS_URL right? (" + msg + ")"
	}
	msg = strings.Join(strings.Fields(msg), " ")
	fmt.Fprintf(c.stderr, "%s replica %s: %s\n", c.name, cmd, msg)
	return ExitFailure
}

// conns are the connections a command uses; close releases them.
type conns struct {
	pool *pgxpool.Pool
	nc   *nats.Conn
	js   jetstream.JetStream
}

func (cn *conns) close() {
	if cn.nc != nil {
		cn.nc.Close()
	}
	if cn.pool != nil {
		cn.pool.Close()
	}
}

// connect opens the database and, when withNATS, NATS, each bounded by a short timeout.
func (c *cli) connect(ctx context.Context, withNATS bool) (*conns, error) {
	cfg, err := service.LoadConfig(c.getenv, c.defaults)
	if err != nil {
		return nil, err
	}
	cn := &conns{}
	// A small pool, without the services' session limits: a rebuild's statements may be long.
	cn.pool, err = pg.Open(ctx, cfg.DatabaseURL, pg.Config{Unbounded: true, MaxConns: 4, ConnectTimeout: connectTimeout, PingTimeout: pingTimeout})
	if err != nil {
		return nil, err
	}
	if !withNATS {
		return cn, nil
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	cn.nc, err = bus.Connect(ctx, cfg.Conn(c.name+"-replica-cli"), connectTimeout, log)
	if err != nil {
		cn.close()
		return nil, err
	}
	cn.js, err = jetstream.New(cn.nc)
	if err != nil {
		cn.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return cn, nil
}

func (c *cli) status(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the status as one JSON object")
	if code := c.parse(fs, args, "status [--json]"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, true)
	if err != nil {
		return c.fail("status", err)
	}
	defer cn.close()
	rep, err := replica.Status(ctx, cn.pool, cn.js, c.name)
	if err != nil {
		return c.fail("status", err)
	}
	if *asJSON {
		if err := json.NewEncoder(c.stdout).Encode(rep); err != nil {
			return c.fail("status", err)
		}
		return ExitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "stream last sequence\t%d\n", rep.StreamLastSeq)
	fmt.Fprintf(tw, "last applied sequence\t%d\n", rep.AppliedSeq)
	fmt.Fprintf(tw, "lag\t%d\n", rep.Lag)
	fmt.Fprintf(tw, "users\t%d\n", rep.Users)
	fmt.Fprintf(tw, "dead letters\t%d\n", rep.DeadLetters)
	if rep.Consumer != nil {
		fmt.Fprintf(tw, "consumer %s\t%d pending, %d awaiting ack, %d redelivered\n",
			rep.Consumer.Name, rep.Consumer.NumPending, rep.Consumer.NumAckPending, rep.Consumer.NumRedeliver)
	} else {
		fmt.Fprintf(tw, "consumer %s\tnot found\n", c.name)
	}
	if err := tw.Flush(); err != nil {
		return c.fail("status", err)
	}
	return ExitOK
}

func (c *cli) rebuild(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	fromSeq := fs.Uint64("from-seq", 0, "re-apply the stream from this `sequence` over a copy of the current replica")
	since := fs.String("since", "", "re-apply the events stored since this `time` (RFC 3339, e.g. 2025-01-02T15:04:05Z) over a copy of the current replica")
	const synopsis = "rebuild [--from-seq N | --since RFC3339]"
	if code := c.parse(fs, args, synopsis); code >= 0 {
		return code
	}
	var opts replica.RebuildOptions
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case set["from-seq"] && set["since"]:
		return c.usageError("rebuild", "--from-seq and --since are exclusive", synopsis)
	case set["from-seq"] && *fromSeq == 0:
		return c.usageError("rebuild", "--from-seq must be at least 1", synopsis)
	case set["since"]:
		t, err := time.Parse(time.RFC3339, *since)
		if err != nil {
			return c.usageError("rebuild", fmt.Sprintf("--since %q is not an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)", *since), synopsis)
		}
		opts.Since = t
	}
	opts.FromSeq = *fromSeq

	cn, err := c.connect(ctx, true)
	if err != nil {
		return c.fail("rebuild", err)
	}
	defer cn.close()
	if err := replica.Migrate(ctx, cn.pool); err != nil {
		return c.fail("rebuild", err)
	}
	bar := newProgress(c.stdout, "rebuild")
	opts.Progress = bar.update
	res, err := replica.Rebuild(ctx, cn.pool, cn.js, opts)
	bar.finish()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(c.stderr, "%s replica rebuild: interrupted after %d events; the live replica is untouched\n", c.name, res.Read)
			return ExitFailure
		}
		return c.fail("rebuild", err)
	}
	kind := "full"
	switch {
	case opts.FromSeq > 0:
		kind = fmt.Sprintf("from sequence %d", opts.FromSeq)
	case !opts.Since.IsZero():
		kind = "since " + opts.Since.Format(time.RFC3339)
	}
	fmt.Fprintf(c.stdout, "rebuilt the replica (%s) up to stream sequence %d and swapped it in\n", kind, res.LastSeq)
	fmt.Fprintf(c.stdout, "events read %d, applied %d, skipped %d (%d invalid)\n", res.Read, res.Applied, res.Skipped, res.Invalid)
	fmt.Fprintf(c.stdout, "rows applied by %s during the rebuild and merged: %d\n", c.name, res.Merged)
	fmt.Fprintf(c.stdout, "took %s: %.0f events/s\n", res.Elapsed.Round(time.Millisecond), rate(res.Read, res.Elapsed))
	return ExitOK
}

func (c *cli) usageError(cmd, msg, synopsis string) int {
	fmt.Fprintf(c.stderr, "%s replica %s: %s\nusage: %s replica %s\n", c.name, cmd, msg, c.name, synopsis)
	return ExitUsage
}

func (c *cli) verify(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	if code := c.parse(fs, args, "verify"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, true)
	if err != nil {
		return c.fail("verify", err)
	}
	defer cn.close()
	bar := newProgress(c.stderr, "verify")
	res, err := replica.Verify(ctx, cn.pool, cn.js, bar.update)
	bar.finish()
	if err != nil {
		return c.fail("verify", err)
	}
	for _, d := range res.Differences {
		fmt.Fprintln(c.stdout, describe(d))
	}
	unchecked := ""
	if res.Unchecked > 0 {
		unchecked = fmt.Sprintf("; %d users not checked (changed after sequence %d, or not applied yet: check the lag and run verify again)", res.Unchecked, res.LastSeq)
	}
	if len(res.Differences) > 0 {
		fmt.Fprintf(c.stdout, "%d users differ between the replica and the stream (%d users in the stream up to sequence %d%s)\n",
			len(res.Differences), res.Users, res.LastSeq, unchecked)
		return ExitFailure
	}
	fmt.Fprintf(c.stdout, "the replica equals the stream: %d users up to sequence %d%s\n", res.Users, res.LastSeq, unchecked)
	return ExitOK
}

// describe is one line about d.
func describe(d replica.Difference) string {
	switch d.Kind {
	case replica.Missing:
		return fmt.Sprintf("missing   %s: in the stream (seq %d), not in the replica", d.UserID, d.Seq)
	case replica.Extra:
		return fmt.Sprintf("extra     %s: in the replica (version %d), not in the stream", d.UserID, d.Replica.Version)
	}
	if d.Stream == nil {
		return fmt.Sprintf("different %s: replica version %d, stream seq %d", d.UserID, d.Replica.Version, d.Seq)
	}
	var parts []string
	for _, f := range d.Fields {
		parts = append(parts, fmt.Sprintf("%s replica %s stream %s", f, field(*d.Replica, f), field(*d.Stream, f)))
	}
	return fmt.Sprintf("different %s: %s", d.UserID, strings.Join(parts, "; "))
}

func field(u events.User, name string) string {
	switch name {
	case "email":
		return fmt.Sprintf("%q", u.Email)
	case "display_name":
		return fmt.Sprintf("%q", u.DisplayName)
	case "roles":
		return "[" + strings.Join(u.Roles, ",") + "]"
	case "status":
		return u.Status
	case "version":
		return fmt.Sprint(u.Version)
	}
	return ""
}

func (c *cli) deadLetters(ctx context.Context, args []string) int {
	action := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	switch action {
	case "list":
		return c.listDeadLetters(ctx, args)
	case "retry":
		return c.retryDeadLetters(ctx, args)
	}
	fmt.Fprintf(c.stderr, "%s replica dead-letters: unknown action %q\nusage: %s replica dead-letters [list [--json] | retry [--seq N]]\n", c.name, action, c.name)
	return ExitUsage
}

func (c *cli) listDeadLetters(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("dead-letters list", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object per dead letter")
	if code := c.parse(fs, args, "dead-letters list [--json]"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, false)
	if err != nil {
		return c.fail("dead-letters", err)
	}
	defer cn.close()
	dls, err := replica.DeadLetters(ctx, cn.pool)
	if err != nil {
		return c.fail("dead-letters", err)
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		for _, d := range dls {
			if err := enc.Encode(jsonDeadLetter(d)); err != nil {
				return c.fail("dead-letters", err)
			}
		}
		return ExitOK
	}
	if len(dls) == 0 {
		fmt.Fprintln(c.stdout, "no dead letters")
		return ExitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tUSER\tSUBJECT\tRECORDED\tREASON")
	for _, d := range dls {
		user := "-"
		if d.UserID != nil {
			user = d.UserID.String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.Seq, user, d.Subject, d.At.UTC().Format(time.RFC3339), oneLine(d.Reason))
	}
	if err := tw.Flush(); err != nil {
		return c.fail("dead-letters", err)
	}
	fmt.Fprintf(c.stdout, "%d dead letters\n", len(dls))
	return ExitOK
}

// deadLetterJSON is a dead letter as `dead-letters list --json` prints it.
type deadLetterJSON struct {
	Seq      uint64    `json:"seq"`
	Subject  string    `json:"subject"`
	UserID   *string   `json:"user_id"`
	Data     string    `json:"data"`
	Reason   string    `json:"reason"`
	Recorded time.Time `json:"recorded_at"`
}

func jsonDeadLetter(d replica.DeadLetter) deadLetterJSON {
	j := deadLetterJSON{Seq: d.Seq, Subject: d.Subject, Data: string(d.Data), Reason: d.Reason, Recorded: d.At.UTC()}
	if d.UserID != nil {
		s := d.UserID.String()
		j.UserID = &s
	}
	return j
}

func (c *cli) retryDeadLetters(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("dead-letters retry", flag.ContinueOnError)
	seq := fs.Uint64("seq", 0, "retry only the dead letter at this stream `sequence` (default: all)")
	if code := c.parse(fs, args, "dead-letters retry [--seq N]"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, false)
	if err != nil {
		return c.fail("dead-letters retry", err)
	}
	defer cn.close()
	results, err := replica.Retry(ctx, cn.pool, *seq)
	for _, r := range results {
		user := ""
		if r.UserID != nil {
			user = " (user " + r.UserID.String() + ")"
		}
		line := fmt.Sprintf("seq %d%s: %s", r.Seq, user, r.Outcome)
		if r.Reason != "" {
			line += ": " + oneLine(r.Reason)
		}
		fmt.Fprintln(c.stdout, line)
	}
	if err != nil {
		return c.fail("dead-letters retry", err)
	}
	failed := 0
	for _, r := range results {
		if r.Outcome == replica.RetryFailed {
			failed++
		}
	}
	fmt.Fprintf(c.stdout, "%d retried, %d resolved, %d still failing\n", len(results), len(results)-failed, failed)
	if failed > 0 {
		return ExitFailure
	}
	return ExitOK
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func rate(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
