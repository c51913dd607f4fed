package replicacmd

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/authmesh/events/service"
)

// ExitCode is the error of a command that has already said on stderr what went wrong: only its
// exit code is left for main to pass on.
type ExitCode int

func (c ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// Usage is the synopsis of the command line Main reads, for the service named name.
func Usage(name string) string {
	return fmt.Sprintf("usage: %[1]s [serve] | %[1]s replica <command> (%[1]s replica help)", name)
}

// Main reads the command line every service with a replica shares: no arguments or "serve" call
// serve; "replica ..." runs the operator commands (Run); -h, --help or help print the usage;
// anything else prints the usage to stderr and returns ExitCode(2). A failed operator command
// returns its ExitCode; serve's error comes back as it is.
func Main(ctx context.Context, defaults service.Config, args []string, getenv func(string) string, stdout, stderr io.Writer, serve func(context.Context) error) error {
	switch {
	case len(args) == 0 || (len(args) == 1 && args[0] == "serve"):
		return serve(ctx)
	case args[0] == "replica":
		if code := Run(ctx, defaults, args[1:], getenv, stdout, stderr); code != 0 {
			return ExitCode(code)
		}
		return nil
	case len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help"):
		fmt.Fprintln(stdout, Usage(defaults.Name))
		return nil
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n%s\n", defaults.Name, strings.Join(args, " "), Usage(defaults.Name))
	return ExitCode(2)
}
