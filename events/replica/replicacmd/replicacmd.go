// Package replicacmd is the operator's command line for a service's user replica, the same in
// every service that keeps one (blog, shop): `<service> replica status | rebuild | verify |
// dead-letters`. The service's main calls Run with the arguments after "replica".
//
// Exit codes: 0 success (verify: the replica equals the stream), 1 failure (verify: differences
// found; dead-letters retry: some still fail; rebuild: interrupted), 2 bad usage.
//
// The files: replicacmd.go reads the command line, connect.go opens the database and NATS,
// commands.go runs each command, format.go writes what it found.
package replicacmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/service"
	"github.com/nats-io/nats.go/jetstream"
)

// Exit codes of Run.
const (
	ExitOK      = 0 // done; verify found no difference
	ExitFailure = 1 // failed, interrupted, differences found, dead letters still failing
	ExitUsage   = 2 // bad command line
)

// ExitCode is the error of a command that has already said on stderr what went wrong: only its
// exit code is left for main to pass on.
type ExitCode int

func (c ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// Run runs the replica command of args (the arguments after "replica") for the service name. load
// reads the service's configuration (its main's loadConfig: DATABASE_URL, NATS_URL, NATS_CREDS);
// only a command that connects calls it, so help and usage errors need no valid configuration. Run
// writes results to stdout, errors (one line each) to stderr, and returns the process's exit code.
func Run(ctx context.Context, name string, load func() (service.Config, error), args []string, stdout, stderr io.Writer) int {
	c := &cli{name: name, load: load, stdout: stdout, stderr: stderr}
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
	name   string
	load   func() (service.Config, error)
	stdout io.Writer
	stderr io.Writer
}

func (c *cli) usage() string {
	return strings.ReplaceAll(`usage: SVC replica <command> [flags]

Operator commands for SVC's user replica (see docs/operations.md).

commands:
  status [--json]                             stream last sequence, last applied sequence, lag,
                                              users, dead letters
  rebuild [--from-seq N | --since RFC3339 | --last-per-subject]
                                              build a new copy of the replica from the stream and
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

// usageError prints msg and the synopsis of cmd, and returns ExitUsage.
func (c *cli) usageError(cmd, msg, synopsis string) int {
	fmt.Fprintf(c.stderr, "%s replica %s: %s\nusage: %s replica %s\n", c.name, cmd, msg, c.name, synopsis)
	return ExitUsage
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
	fmt.Fprintf(c.stderr, "%s replica %s: %s\n", c.name, cmd, oneLine(msg))
	return ExitFailure
}
