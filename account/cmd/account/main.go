// Command account is the account service: users, passwords, login, access tokens and their
// signing keys, and user administration. Every change of a user is published on the USERS
// stream through a transactional outbox.
//
// Usage:
//
//	account [serve]                          serve the HTTP API (the default)
//	account version                          print the version, Go version and VCS revision
//	account keys rotate                      add a new signing key and make it current
//	account keys reseal                      seal every signing key again with the first secret
//	account outbox status                    print pending and published outbox counts, and
//	                                         whether the stream is ahead of the database
//	account outbox republish [--since TIME]  publish kept events again
//	account outbox reconcile                 bring the database above the stream after a restore
//	                                         from an older backup
//
// Configuration is read from the environment (see loadConfig).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/seal"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/service"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, errUsage) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "account:", service.OneLine(err))
		os.Exit(1)
	}
}

// errUsage is returned by run for a command line it does not understand, after printing usage.
var errUsage = errors.New("usage")

const usage = `usage: account [command]

commands:
  serve                              serve the HTTP API (the default when no command is given)
  version                            print the module version, the Go version and the VCS revision
                                     the binary was built from
  keys rotate                        add a new signing key and make it current once published; the
                                     previous public key stays published until every token it signed
                                     has expired
  keys reseal                        seal every signing key again with the first of
                                     SIGNING_KEY_SECRETS, after a new secret was put first
  outbox status                      print pending and published outbox events and the age of the
                                     oldest pending one, and compare the stream with the database
                                     (exit 1 when the stream is ahead of it)
  outbox republish [--since RFC3339] publish kept events again with their original Nats-Msg-Id,
                                     for a stream that lost messages or was recreated
  outbox reconcile                   after a restore from an older backup: give every user the
                                     stream holds newer versions of a version above them, keeping
                                     the database's state, and restore the users it lacks, disabled

environment:
  HTTP_ADDR, DATABASE_URL, NATS_URL, LOG_LEVEL, TOKEN_TTL (15m), TOKEN_ISSUER (account),
  BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD (both or neither),
  PUBLIC_URL (http:// + HTTP_ADDR)   the base of the URLs in openid-configuration
  TRUSTED_PROXIES (none)             comma-separated CIDRs of the proxies whose X-Forwarded-For
                                     names the client to login throttling
  SIGNING_KEY_SECRETS (required: comma-separated secrets of at least 32 characters; the first
  seals the signing keys, every one opens them)
`

// command is a subcommand: it runs with its own arguments and prints its output to stdout.
type command func(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error

var commands = map[string]command{
	"serve":            serve,
	"keys rotate":      rotateKeys,
	"keys reseal":      resealKeys,
	"outbox status":    outboxStatus,
	"outbox republish": outboxRepublish,
	"outbox reconcile": outboxReconcile,
}

// lookup finds the command named by the first one or two words of args, and returns it with the
// rest of args.
func lookup(args []string) (command, []string, bool) {
	if len(args) == 0 {
		return serve, nil, true
	}
	if len(args) >= 2 {
		if c, ok := commands[args[0]+" "+args[1]]; ok {
			return c, args[2:], true
		}
	}
	c, ok := commands[args[0]]
	return c, args[1:], ok
}

// usageError prints msg and the usage to stderr and returns errUsage.
func usageError(stderr io.Writer, msg string) error {
	fmt.Fprintf(stderr, "account: %s\n\n%s", msg, usage)
	return errUsage
}

// run is the program: it reads the command from args and the configuration through getenv,
// logs to stderr, prints a command's output to stdout, and returns when the command is done or,
// for serve, when ctx is done or SIGINT/SIGTERM arrives (nil after a clean shutdown).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if len(args) == 1 && args[0] == "version" { // needs no configuration
		return service.WriteVersion(stdout, "account")
	}
	cmd, rest, ok := lookup(args)
	if ok && len(rest) == 1 && isHelp(rest[0]) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if !ok {
		return usageError(stderr, fmt.Sprintf("unknown command %q", strings.Join(args, " ")))
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := service.NewLogger(stderr, cfg.LogLevel)
	err = cmd(ctx, cfg, log, rest, stdout)
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, string(ue))
	}
	return err
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// usageErr is returned by a command for arguments it does not take.
type usageErr string

func (e usageErr) Error() string { return string(e) }

// noArgs refuses any argument, for commands that take none.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usageErr(fmt.Sprintf("unexpected arguments %q", strings.Join(args, " ")))
	}
	return nil
}

// config is account's configuration.
type config struct {
	service.Config
	TokenTTL      time.Duration // TOKEN_TTL
	TokenIssuer   string        // TOKEN_ISSUER
	AdminEmail    string        // BOOTSTRAP_ADMIN_EMAIL
	AdminPassword string        // BOOTSTRAP_ADMIN_PASSWORD; never logged
	Sealer        *seal.Sealer  // of SIGNING_KEY_SECRETS, which are never logged
	// PublicURL (PUBLIC_URL) is the base of the URLs in openid-configuration, without a trailing
	// slash: "http://" + HTTPAddr by default.
	PublicURL string
	// TrustedProxies (TRUSTED_PROXIES) are the proxies whose X-Forwarded-For names the client to
	// login throttling; none by default.
	TrustedProxies []netip.Prefix
}

// Defaults of account's own settings.
const (
	defaultTokenTTL = 15 * time.Minute
	maxTokenTTL     = 24 * time.Hour
)

// loadConfig reads the configuration through getenv, naming every invalid setting at once. It
// never quotes the admin password or a secret.
func loadConfig(getenv func(string) string) (config, error) {
	base, err := service.LoadConfig(getenv, service.Config{
		Name:        "account",
		HTTPAddr:    "127.0.0.1:8081",
		DatabaseURL: "postgres://postgres@127.0.0.1:5432/account?sslmode=disable",
	})
	if err != nil {
		return config{}, err
	}
	cfg := config{
		Config:        base,
		TokenTTL:      defaultTokenTTL,
		TokenIssuer:   service.DefaultIssuer,
		AdminEmail:    strings.TrimSpace(getenv("BOOTSTRAP_ADMIN_EMAIL")),
		AdminPassword: getenv("BOOTSTRAP_ADMIN_PASSWORD"),
	}
	var problems []string
	if v := strings.TrimSpace(getenv("TOKEN_TTL")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > maxTokenTTL {
			problems = append(problems, fmt.Sprintf("TOKEN_TTL %q: want a duration from 1s to %s, such as 15m", v, maxTokenTTL))
		}
		cfg.TokenTTL = d
	}
	if v := strings.TrimSpace(getenv("TOKEN_ISSUER")); v != "" {
		cfg.TokenIssuer = v
	}
	cfg.PublicURL = defaultPublicURL(cfg.HTTPAddr)
	if v := strings.TrimSpace(getenv("PUBLIC_URL")); v != "" {
		u, err := parsePublicURL(v)
		if err != nil {
			problems = append(problems, err.Error())
		}
		cfg.PublicURL = u
	}
	if v := getenv("TRUSTED_PROXIES"); strings.TrimSpace(v) != "" {
		ps, err := parseTrustedProxies(v)
		if err != nil {
			problems = append(problems, err.Error())
		}
		cfg.TrustedProxies = ps
	}
	switch {
	case cfg.AdminEmail == "" && cfg.AdminPassword == "":
	case cfg.AdminEmail == "" || cfg.AdminPassword == "":
		problems = append(problems, "BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD must be set together")
	default:
		if msg := account.ValidateEmail(cfg.AdminEmail); msg != "" {
			problems = append(problems, "BOOTSTRAP_ADMIN_EMAIL "+msg)
		}
		if msg := account.ValidatePassword(cfg.AdminPassword); msg != "" {
			problems = append(problems, "BOOTSTRAP_ADMIN_PASSWORD "+msg)
		}
	}
	if v := getenv("SIGNING_KEY_SECRETS"); strings.TrimSpace(v) == "" {
		problems = append(problems, fmt.Sprintf("SIGNING_KEY_SECRETS is not set: account seals its signing keys with it; "+
			"set one or more comma-separated secrets of at least %d characters", seal.MinSecret))
	} else if cfg.Sealer, err = seal.Parse(v); err != nil {
		problems = append(problems, "SIGNING_KEY_SECRETS: "+err.Error())
	}
	if len(problems) > 0 {
		return config{}, fmt.Errorf("invalid configuration: %s", strings.Join(problems, "; "))
	}
	return cfg, nil
}

// defaultPublicURL is the URL of the listening address: a server bound to every interface
// (":8081") is named localhost.
func defaultPublicURL(addr string) string {
	if strings.HasPrefix(addr, ":") {
		addr = "localhost" + addr
	}
	return "http://" + addr
}

// parsePublicURL checks PUBLIC_URL: an absolute http or https URL, with no credentials, query or
// fragment (a path is fine, for a service behind a path prefix). It returns it without trailing
// slashes.
func parsePublicURL(v string) (string, error) {
	u, err := url.Parse(v)
	ok := err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "" && u.Opaque == "" &&
		u.User == nil && u.RawQuery == "" && !u.ForceQuery && !strings.Contains(v, "#")
	if !ok {
		return "", fmt.Errorf("PUBLIC_URL %q: want an absolute http(s) URL without credentials, query or fragment, such as https://id.example.com", v)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// parseTrustedProxies parses TRUSTED_PROXIES: comma-separated CIDRs, a bare address standing for
// itself alone.
func parseTrustedProxies(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("TRUSTED_PROXIES %q: want comma-separated CIDRs such as 10.0.0.0/8,fd00::/8", s)
			}
			p = netip.PrefixFrom(a.WithZone(""), a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// logAttrs is the configuration as logged at start: no passwords, no credentials in URLs.
func (c config) logAttrs() []any {
	return []any{
		"addr", c.HTTPAddr,
		"database", pg.Redact(c.DatabaseURL),
		"nats", bus.Redact(c.NATSURL),
		"log_level", c.LogLevel,
		"token_ttl", c.TokenTTL.String(),
		"token_issuer", c.TokenIssuer,
		"bootstrap_admin", c.AdminEmail,
		"public_url", c.PublicURL,
		"trusted_proxies", fmt.Sprint(c.TrustedProxies),
		"signing_key_secrets", c.Sealer.Len(),
	}
}
