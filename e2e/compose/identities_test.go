package compose

import (
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// identities are the users of deploy/nats/auth.conf and the variables of their passwords.
var identities = map[string]string{
	"account": "NATS_ACCOUNT_PASSWORD",
	"blog":    "NATS_BLOG_PASSWORD",
	"shop":    "NATS_SHOP_PASSWORD",
	"ops":     "NATS_OPS_PASSWORD",
}

// TestNATSIdentities holds the compose files to deploy/nats/auth.conf: every NATS node mounts it
// next to its configuration, which the server then parses with the node's environment into the
// four identities and their passwords; each service connects as its own identity with that
// password; the cluster's one-shot init runs as ops.
func TestNATSIdentities(t *testing.T) {
	for variant, files := range variants {
		t.Run(variant, func(t *testing.T) {
			p := loadProject(t, files...)
			var passwords map[string]string // identity → password, the same on every node
			for _, node := range natsServices(p) {
				got := nodeIdentities(t, node, p.Services[node])
				if passwords == nil {
					passwords = got
				} else if !maps.Equal(got, passwords) {
					t.Errorf("%s: identities %v differ from another node's %v", node, got, passwords)
				}
			}
			for svc := range services {
				raw := p.Services[svc].Environment["NATS_URL"]
				var user, password string
				for _, s := range strings.Split(raw, ",") {
					u, err := url.Parse(s)
					if err != nil {
						t.Fatalf("%s: NATS_URL %q: %v", svc, raw, err)
					}
					if !slices.Contains(natsServices(p), u.Hostname()) || u.Port() != "4222" {
						t.Errorf("%s: NATS_URL %q names %s, which is not a NATS node's client port", svc, raw, u.Host)
					}
					if u.User != nil && user == "" {
						user = u.User.Username()
						password, _ = u.User.Password()
					}
				}
				if user != svc || password == "" || password != passwords[svc] {
					t.Errorf("%s connects as %q with password %q, want its own identity %q with the nodes' password %q",
						svc, user, password, svc, passwords[svc])
				}
			}
			if job := p.Services["nats-init"]; job != nil {
				if job.Environment["NATS_USER"] != "ops" || job.Environment["NATS_PASSWORD"] != passwords["ops"] {
					t.Errorf("nats-init runs as %q / %q, want ops with the nodes' password", job.Environment["NATS_USER"], job.Environment["NATS_PASSWORD"])
				}
			}
		})
	}
}

// nodeIdentities parses the configuration of a NATS node as its server would, in a copy of its
// /etc/nats with the files it mounts there and its environment, and returns the password of
// every user. The users must be exactly the identities, each with its password variable set.
func nodeIdentities(t *testing.T, node string, s *composeService) map[string]string {
	t.Helper()
	i := slices.Index(s.Command, "--config")
	if i < 0 || i+1 >= len(s.Command) {
		t.Fatalf("%s: command %q does not name a --config", node, s.Command)
	}
	conf := s.Command[i+1]
	dir := t.TempDir()
	for _, target := range []string{conf, path.Join(path.Dir(conf), "auth.conf")} {
		src, ok := s.mount(target)
		if !ok || !isBindMount(src) {
			t.Fatalf("%s: nothing of the repository is mounted at %s (the config includes auth.conf next to it)", node, target)
		}
		raw, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path.Base(target)), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if src, _ := s.mount(path.Join(path.Dir(conf), "auth.conf")); path.Clean(src) != "deploy/nats/auth.conf" {
		t.Errorf("%s: auth.conf is mounted from %s, want deploy/nats/auth.conf", node, src)
	}
	for k, v := range s.Environment {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, path.Base(conf)))
	if err != nil {
		t.Fatalf("%s: the server would not start: %v", node, err)
	}
	got := map[string]string{}
	for _, u := range opts.Users {
		got[u.Username] = u.Password
	}
	for user, variable := range identities {
		if v := s.Environment[variable]; v == "" || got[user] != v {
			t.Errorf("%s: user %s has password %q, want %s = %q from the node's environment", node, user, got[user], variable, v)
		}
	}
	if len(got) != len(identities) || opts.NoAuthUser != "" {
		t.Errorf("%s: users %v (no_auth_user %q), want exactly the identities, none anonymous", node, got, opts.NoAuthUser)
	}
	return got
}
