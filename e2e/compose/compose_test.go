package compose

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// services are the three services with their ports (docs/contract.md).
var services = map[string]string{"account": "8081", "blog": "8082", "shop": "8083"}

// required are the variables a service must be given in a container: their defaults point at
// 127.0.0.1, which is the container itself.
var required = []string{"HTTP_ADDR", "DATABASE_URL", "NATS_URL"}

// contractEnv is what docs/contract.md says each service reads. The code must read at least these;
// if it does not, the scan of the sources below has gone blind and the other checks mean nothing.
var contractEnv = map[string][]string{
	"account": {"HTTP_ADDR", "DATABASE_URL", "NATS_URL", "LOG_LEVEL", "TOKEN_TTL", "TOKEN_ISSUER", "BOOTSTRAP_ADMIN_EMAIL", "BOOTSTRAP_ADMIN_PASSWORD", "SIGNING_KEY_SECRETS", "PUBLIC_URL", "TRUSTED_PROXIES", "NATS_CREDS"},
	"blog":    {"HTTP_ADDR", "DATABASE_URL", "NATS_URL", "NATS_CREDS", "LOG_LEVEL", "TOKEN_ISSUER"},
	"shop":    {"HTTP_ADDR", "DATABASE_URL", "NATS_URL", "NATS_CREDS", "LOG_LEVEL", "TOKEN_ISSUER"},
}

// variants are the ways to start the system: the single NATS server, and the cluster laid over it.
var variants = map[string][]string{
	"single":  {composeFile},
	"cluster": {composeFile, clusterFile},
}

func TestEnvironmentIsWhatTheCodeReads(t *testing.T) {
	reads := map[string]map[string]bool{}
	for svc := range services {
		reads[svc] = envReads(t, svc)
		for _, name := range contractEnv[svc] {
			if !reads[svc][name] {
				t.Errorf("%s: the sources do not read %s (docs/contract.md says they do); read: %v", svc, name, keys(reads[svc]))
			}
		}
	}
	for variant, files := range variants {
		t.Run(variant, func(t *testing.T) {
			p := loadProject(t, files...)
			for svc := range services {
				s := p.Services[svc]
				if s == nil {
					t.Errorf("no service %s", svc)
					continue
				}
				for name := range s.Environment {
					if !reads[svc][name] {
						t.Errorf("%s is given %s, which it does not read (it reads %v)", svc, name, keys(reads[svc]))
					}
				}
				for _, name := range required {
					if _, ok := s.Environment[name]; !ok {
						t.Errorf("%s is not given %s", svc, name)
					}
				}
			}
			// Tokens that account issues must be accepted by blog and shop.
			issuer := map[string]string{}
			for svc := range services {
				if v, ok := p.Services[svc].Environment["TOKEN_ISSUER"]; ok {
					issuer[svc] = v
				}
			}
			if len(issuer) > 0 && (len(issuer) != len(services) || issuer["blog"] != issuer["account"] || issuer["shop"] != issuer["account"]) {
				t.Errorf("TOKEN_ISSUER differs between the services: %v", issuer)
			}
		})
	}
}

func TestServicesWiring(t *testing.T) {
	dbs := initDatabases(t)
	for variant, files := range variants {
		t.Run(variant, func(t *testing.T) {
			p := loadProject(t, files...)
			pg := p.Services["postgres"]
			if pg == nil {
				t.Fatal("no service postgres")
			}
			for svc, port := range services {
				t.Run(svc, func(t *testing.T) {
					s := p.Services[svc]
					if s == nil {
						t.Fatalf("no service %s", svc)
					}
					env := s.Environment

					if got, want := env["HTTP_ADDR"], "0.0.0.0:"+port; got != want {
						t.Errorf("HTTP_ADDR = %q, want %q", got, want)
					}
					if want := []string{"127.0.0.1:" + port + ":" + port}; !slices.Equal(s.Ports, want) {
						t.Errorf("ports = %q, want %q", s.Ports, want)
					}
					if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, "http://127.0.0.1:"+port+"/readyz") {
						t.Errorf("health check does not ask http://127.0.0.1:%s/readyz: %+v", port, s.Healthcheck)
					}
					checkRestart(t, s)

					u, err := url.Parse(env["DATABASE_URL"])
					if err != nil {
						t.Fatalf("DATABASE_URL: %v", err)
					}
					pass, _ := u.User.Password()
					if u.Scheme != "postgres" || u.Hostname() != "postgres" || u.Port() != "5432" || u.Path != "/"+svc || u.User.Username() != svc {
						t.Errorf("DATABASE_URL = %s, want postgres://%s:...@postgres:5432/%s", u.Redacted(), svc, svc)
					}
					passVar, ok := dbs[svc]
					if !ok {
						t.Errorf("the init script creates no database %s", svc)
					} else if want := pg.Environment[passVar]; pass != want || want == "" {
						t.Errorf("DATABASE_URL password of %s is not the postgres service's %s", svc, passVar)
					}

					natsHosts := map[string]bool{}
					for _, raw := range strings.Split(env["NATS_URL"], ",") {
						u, err := url.Parse(raw)
						if err != nil || u.Scheme != "nats" || u.Port() != "4222" || !isNATS(p.Services[u.Hostname()]) {
							t.Errorf("NATS_URL part %q is not nats://<a nats service>:4222", raw)
							continue
						}
						natsHosts[u.Hostname()] = true
					}
					if want := natsServices(p); !slices.Equal(keys(natsHosts), want) {
						t.Errorf("NATS_URL names %v, want every NATS server %v", keys(natsHosts), want)
					}

					// Started after what it needs is healthy: directly, or through a one-shot job that
					// waits for it.
					reach := map[string]bool{}
					var walk func(string)
					walk = func(name string) {
						for dep, d := range p.Services[name].DependsOn {
							if p.Services[dep] == nil {
								t.Errorf("%s depends on %s, which does not exist", name, dep)
								continue
							}
							if d.Condition != "service_healthy" && d.Condition != "service_completed_successfully" {
								t.Errorf("%s depends on %s with condition %q", name, dep, d.Condition)
							}
							if d.Condition == "service_healthy" && p.Services[dep].Healthcheck == nil {
								t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
							}
							if !reach[dep] {
								reach[dep] = true
								walk(dep)
							}
						}
					}
					walk(svc)
					for _, need := range append(keys(natsHosts), "postgres") {
						if !reach[need] {
							t.Errorf("%s does not wait for %s", svc, need)
						}
					}

					if want := map[string]string{"SERVICE": svc}; s.Build == nil || s.Build.Context != "." || s.Build.Dockerfile != dockerfile || !maps.Equal(s.Build.Args, want) {
						t.Errorf("build = %+v, want context ., dockerfile %s and args %v", s.Build, dockerfile, want)
					} else if _, err := os.Stat(filepath.Join(root, s.Build.Dockerfile)); err != nil {
						t.Error(err)
					}
				})
			}
		})
	}
}

func TestPostgres(t *testing.T) {
	p := loadProject(t, composeFile)
	pg := p.Services["postgres"]
	m := regexp.MustCompile(`^postgres:(\d+)(-[a-z0-9.]+)?$`).FindStringSubmatch(pg.Image)
	if m == nil {
		t.Fatalf("postgres image %q: want the official image at a pinned major version", pg.Image)
	}
	major, _ := strconv.Atoi(m[1])
	if major < 15 {
		t.Errorf("postgres image %q: want 15 or newer", pg.Image)
	}
	// The image's data directory moved under /var/lib/postgresql/<major>/docker with 18.
	dataDir := "/var/lib/postgresql/data"
	if major >= 18 {
		dataDir = "/var/lib/postgresql"
	}
	if src, ok := pg.mount(dataDir); !ok || isBindMount(src) {
		t.Errorf("postgres: no named volume at %s: %q", dataDir, pg.Volumes)
	} else if _, ok := p.Volumes[src]; !ok {
		t.Errorf("postgres: volume %s is not declared", src)
	}
	src, ok := pg.mount("/docker-entrypoint-initdb.d")
	if !ok || filepath.Clean(src) != "deploy/postgres/init" {
		t.Fatalf("postgres: deploy/postgres/init is not mounted at /docker-entrypoint-initdb.d: %q", pg.Volumes)
	}
	if pg.Healthcheck == nil {
		t.Error("postgres has no health check")
	}
	checkRestart(t, pg)

	dbs := initDatabases(t)
	if got, want := keys(dbs), keys(services); !slices.Equal(got, want) {
		t.Errorf("the init script creates databases %v, want %v", got, want)
	}
	passwords := map[string]string{}
	for db, v := range dbs {
		pass, ok := pg.Environment[v]
		if !ok || pass == "" {
			t.Errorf("postgres is not given %s, the password of database %s", v, db)
		}
		if other, dup := passwords[pass]; dup {
			t.Errorf("databases %s and %s have the same password", db, other)
		}
		passwords[pass] = db
	}
	if _, ok := pg.Environment["POSTGRES_PASSWORD"]; !ok {
		t.Error("postgres is not given POSTGRES_PASSWORD")
	}
}

// initDatabases reads the databases the init script creates, with the variable holding each
// one's password: lines `authmesh_create_db NAME "$VAR"`.
func initDatabases(t *testing.T) map[string]string {
	t.Helper()
	const script = "deploy/postgres/init/10-databases.sh"
	fi, err := os.Stat(filepath.Join(root, script))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", script)
	}
	raw, err := os.ReadFile(filepath.Join(root, script))
	if err != nil {
		t.Fatal(err)
	}
	dbs := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^authmesh_create_db ([a-z_]+) "\$([A-Z_]+)"$`).FindAllStringSubmatch(string(raw), -1) {
		dbs[m[1]] = m[2]
	}
	return dbs
}

func TestNATS(t *testing.T) {
	for variant, files := range variants {
		t.Run(variant, func(t *testing.T) {
			p := loadProject(t, files...)
			nodes := natsServices(p)
			want := 1
			if variant == "cluster" {
				want = 3
			}
			if len(nodes) != want {
				t.Fatalf("NATS servers %v, want %d", nodes, want)
			}
			names := map[string]bool{}
			volumes := map[string]bool{}
			for _, node := range nodes {
				s := p.Services[node]
				m := regexp.MustCompile(`^nats:(\d+)\.(\d+)(\.\d+)?(-[a-z0-9.]+)?$`).FindStringSubmatch(s.Image)
				if m == nil {
					t.Errorf("%s: image %q: want the official image at a pinned 2.x version", node, s.Image)
					continue
				}
				if maj, _ := strconv.Atoi(m[1]); maj != 2 {
					t.Errorf("%s: image %q: want 2.12 or newer", node, s.Image)
				} else if minor, _ := strconv.Atoi(m[2]); minor < 12 {
					t.Errorf("%s: image %q: want 2.12 or newer", node, s.Image)
				}
				checkRestart(t, s)

				i := slices.Index(s.Command, "--config")
				if i < 0 || i+1 >= len(s.Command) {
					t.Errorf("%s: command %q does not name a --config", node, s.Command)
					continue
				}
				src, ok := s.mount(s.Command[i+1])
				if !ok || !isBindMount(src) {
					t.Errorf("%s: the config %s is not mounted from the repository", node, s.Command[i+1])
					continue
				}
				conf := readConf(t, src)
				if !regexp.MustCompile(`(?m)^\s*sync_interval:\s*always\s*$`).MatchString(conf) {
					t.Errorf("%s: %s lacks sync_interval: always", node, src)
				}
				store := regexp.MustCompile(`(?m)^\s*store_dir:\s*"?([^"\s]+)"?\s*$`).FindStringSubmatch(conf)
				if store == nil {
					t.Errorf("%s: %s sets no JetStream store_dir", node, src)
				} else if vol, ok := s.mount(store[1]); !ok || isBindMount(vol) {
					t.Errorf("%s: no named volume at the store_dir %s", node, store[1])
				} else if _, ok := p.Volumes[vol]; !ok || volumes[vol] {
					t.Errorf("%s: volume %s is undeclared or shared", node, vol)
				} else {
					volumes[vol] = true
				}
				monitor := regexp.MustCompile(`(?m)^\s*http:\s*[\d.]*:(\d+)\s*$`).FindStringSubmatch(conf)
				if monitor == nil {
					t.Errorf("%s: %s has no monitoring port (http:)", node, src)
				} else if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, "http://127.0.0.1:"+monitor[1]+"/healthz") {
					t.Errorf("%s: health check does not ask http://127.0.0.1:%s/healthz", node, monitor[1])
				}

				if variant != "cluster" {
					continue
				}
				if !strings.Contains(conf, "server_name: $NATS_SERVER_NAME") {
					t.Errorf("%s: %s does not take server_name from NATS_SERVER_NAME", node, src)
				}
				name := s.Environment["NATS_SERVER_NAME"]
				if name == "" || names[name] {
					t.Errorf("%s: NATS_SERVER_NAME %q is empty or not unique", node, name)
				}
				names[name] = true
				var routes []string
				for _, m := range regexp.MustCompile(`nats://([a-z0-9-]+):6222`).FindAllStringSubmatch(conf, -1) {
					routes = append(routes, m[1])
				}
				slices.Sort(routes)
				if !slices.Equal(routes, nodes) {
					t.Errorf("%s: cluster routes %v, want every node %v", node, routes, nodes)
				}
			}
		})
	}
}

// readConf reads a NATS config file without its comments.
func readConf(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(string(raw), "")
}

func TestClusterStream(t *testing.T) {
	p := loadProject(t, composeFile, clusterFile)
	job := p.Services["nats-init"]
	if job == nil {
		t.Fatal("no service nats-init")
	}
	script := strings.Join(job.Command, " ")
	m := regexp.MustCompile(`nats stream add ` + events.StreamName + ` --config (\S+)`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("nats-init does not create stream %s from a file: %q", events.StreamName, script)
	}
	src, ok := job.mount(m[1])
	if !ok || !isBindMount(src) {
		t.Fatalf("nats-init: %s is not mounted from the repository", m[1])
	}
	raw, err := os.ReadFile(filepath.Join(root, src))
	if err != nil {
		t.Fatal(err)
	}
	var got jetstream.StreamConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	want := bus.StreamConfig()
	want.Replicas = 3
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s differs from bus.StreamConfig() at 3 replicas (-want +got):\n%s", src, diff)
	}
	if !regexp.MustCompile(`nats kv add ` + events.KeysBucket + ` .*--replicas 3`).MatchString(script) {
		t.Errorf("nats-init does not create bucket %s at 3 replicas: %q", events.KeysBucket, script)
	}
	for _, node := range natsServices(p) {
		if job.DependsOn[node].Condition != "service_healthy" {
			t.Errorf("nats-init does not wait for %s to be healthy", node)
		}
	}
	for svc := range services {
		if p.Services[svc].DependsOn["nats-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s does not wait for nats-init to complete", svc)
		}
	}
}

// TestDockerfile checks the one Dockerfile as each service builds it, with its build argument
// SERVICE.
func TestDockerfile(t *testing.T) {
	makeFlags := makefileBuildFlags(t)
	goVersion := goWorkVersion(t)
	ignore := loadDockerignore(t)
	for svc := range services {
		t.Run(svc, func(t *testing.T) {
			ins := serviceDockerfile(t, svc)
			b := buildCommand(t, ins)
			if want := "./" + svc + "/cmd/" + svc; b.pkg != want {
				t.Errorf("builds %s, want %s", b.pkg, want)
			}
			if !slices.Equal(b.flags, makeFlags) || b.env != "CGO_ENABLED=0" {
				t.Errorf("builds with %s go build %q, want the Makefile's CGO_ENABLED=0 go build %q", b.env, b.flags, makeFlags)
			}

			var stages []string
			var from []string
			for _, in := range ins {
				if in.Cmd == "FROM" {
					f := strings.Fields(in.Args)
					from = append(from, f[0])
					name := ""
					if len(f) == 3 && strings.EqualFold(f[1], "AS") {
						name = f[2]
					}
					stages = append(stages, name)
				}
			}
			if len(from) < 2 {
				t.Fatalf("FROM %v: want a build stage and a runtime stage", from)
			}
			if want := "golang:" + goVersion; from[0] != want && !strings.HasPrefix(from[0], want+"-") && !strings.HasPrefix(from[0], want+".") {
				t.Errorf("build stage FROM %s, want golang:%s (go.work)", from[0], goVersion)
			}
			if !regexp.MustCompile(`^(alpine|busybox):[0-9]`).MatchString(from[len(from)-1]) {
				t.Errorf("runtime stage FROM %s: want a pinned alpine or busybox, which has the wget of the health check", from[len(from)-1])
			}

			// Instructions of the last stage.
			last := 0
			for i, in := range ins {
				if in.Cmd == "FROM" {
					last = i
				}
			}
			runtime := ins[last+1:]
			copied := ""
			var user, entrypoint string
			links := map[string]string{} // link -> target, of RUN ln -s
			for _, in := range runtime {
				switch in.Cmd {
				case "COPY":
					f := strings.Fields(in.Args)
					if len(f) == 3 && f[0] == "--from="+stages[0] && f[1] == b.out {
						copied = f[2]
					}
				case "USER":
					user = in.Args
				case "ENTRYPOINT":
					entrypoint = in.Args
				case "RUN":
					if w, err := shellWords(in.Args); err == nil && len(w) == 4 && w[0] == "ln" && (w[1] == "-s" || w[1] == "-sf") {
						target := w[2]
						if !path.IsAbs(target) {
							target = path.Join(path.Dir(w[3]), target)
						}
						links[w[3]] = target
					}
				}
			}
			// The operator commands run as `docker compose exec <svc> <svc> ...`: the binary is on
			// the PATH under the service's name.
			if want := "/usr/local/bin/" + svc; copied != want {
				t.Errorf("the runtime stage does not COPY --from=%s %s %s", stages[0], b.out, want)
			}
			if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "root" || uid == "0" {
				t.Errorf("USER %q: want a non-root user", user)
			}
			var ep []string
			if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 {
				t.Errorf("ENTRYPOINT %s: want the exec form with the binary alone", entrypoint)
			} else if got := resolveLinks(ep[0], links); got != copied {
				t.Errorf("ENTRYPOINT %s runs %s, want %s", entrypoint, got, copied)
			}

			// Every file the build stage copies from the context exists and is sent.
			modules := goWorkModules(t)
			copiedMods := map[string]bool{}
			for _, in := range ins[:last] {
				if in.Cmd != "COPY" {
					continue
				}
				f := strings.Fields(in.Args)
				for _, src := range f[:len(f)-1] {
					if strings.HasPrefix(src, "--") {
						t.Errorf("COPY %s: the build stage copies only from the context", in.Args)
						continue
					}
					if src == "." {
						continue
					}
					if _, err := os.Stat(filepath.Join(root, src)); err != nil {
						t.Errorf("COPY %s: %v", src, err)
					}
					if ignore.excluded(filepath.ToSlash(filepath.Clean(src))) {
						t.Errorf("COPY %s: excluded by .dockerignore", src)
					}
					if dir, ok := strings.CutSuffix(src, "/go.mod"); ok {
						copiedMods[dir] = true
					}
				}
			}
			for _, m := range modules {
				if !copiedMods[m] {
					t.Errorf("the module files of %s (in go.work) are not copied before go mod download", m)
				}
			}
		})
	}
}

func TestDockerignoreKeepsWhatBuildsNeed(t *testing.T) {
	ignore := loadDockerignore(t)
	for _, f := range []string{"go.work", "go.work.sum"} {
		if ignore.excluded(f) {
			t.Errorf(".dockerignore excludes %s", f)
		}
	}
	for _, m := range goWorkModules(t) {
		err := filepath.WalkDir(filepath.Join(root, m), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			rel = filepath.ToSlash(rel)
			name := d.Name()
			need := name == "go.mod" || name == "go.sum"
			if m != "e2e" && !strings.Contains(rel, "/testdata/") {
				need = need || strings.HasSuffix(name, ".sql") || (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"))
			}
			if need && ignore.excluded(rel) {
				t.Errorf(".dockerignore excludes %s, which the build needs", rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{".git/HEAD", "bin/account", "account/cmd/account/main_test.go", "e2e/stack_test.go"} {
		if !ignore.excluded(f) {
			t.Errorf(".dockerignore sends %s", f)
		}
	}
}

// TestDockerBuild builds each binary as the Dockerfile does: the context that .dockerignore lets
// through, copied to a fresh directory, and the Dockerfile's own go build command (with the
// service's SERVICE) there.
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	ignore := loadDockerignore(t)
	ctxDir := t.TempDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if rel == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || ignore.excluded(rel) {
			return nil
		}
		return copyFile(path, filepath.Join(ctxDir, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for svc := range services {
		t.Run(svc, func(t *testing.T) {
			b := buildCommand(t, serviceDockerfile(t, svc))
			bin := filepath.Join(out, svc)
			args := append([]string{"build"}, b.flags...)
			args = append(args, "-o", bin, b.pkg)
			cmd := exec.Command("go", args...)
			cmd.Dir = ctxDir
			// As in the image: the go.work of the context, no flags from this environment.
			cmd.Env = append(os.Environ(), b.env, "GOWORK=", "GOFLAGS=")
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
			}
			info, err := exec.Command("go", "version", "-m", bin).Output()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"\tpath\tgithub.com/authmesh/" + svc + "/cmd/" + svc + "\n",
				"\tbuild\tCGO_ENABLED=0\n",
				"\tbuild\t-trimpath=true\n",
			} {
				if !strings.Contains(string(info), want) {
					t.Errorf("go version -m %s lacks %q:\n%s", svc, want, info)
				}
			}
		})
	}
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// goBuild is the go build command of a Dockerfile.
type goBuild struct {
	env   string   // the one variable assignment before go, such as CGO_ENABLED=0
	flags []string // flags other than -o
	out   string   // the -o path
	pkg   string
}

// buildCommand finds the RUN ... go build instruction among the instructions of the Dockerfile.
func buildCommand(t *testing.T, ins []instruction) goBuild {
	t.Helper()
	var found []goBuild
	for _, in := range ins {
		if in.Cmd != "RUN" || !strings.Contains(in.Args, "go build") {
			continue
		}
		w, err := shellWords(in.Args)
		if err != nil {
			t.Fatalf("%s: %v", dockerfile, err)
		}
		var b goBuild
		if len(w) > 0 && strings.Contains(w[0], "=") {
			b.env, w = w[0], w[1:]
		}
		if len(w) < 3 || w[0] != "go" || w[1] != "build" {
			t.Fatalf("%s: RUN %s: want [VAR=value] go build flags... package", dockerfile, in.Args)
		}
		w = w[2:]
		b.pkg = w[len(w)-1]
		for i := 0; i < len(w)-1; i++ {
			if w[i] == "-o" && i+1 < len(w)-1 {
				b.out = w[i+1]
				i++
				continue
			}
			b.flags = append(b.flags, w[i])
		}
		found = append(found, b)
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d go build commands, want 1", dockerfile, len(found))
	}
	return found[0]
}

// makefileBuildFlags reads the Makefile's BUILD line: CGO_ENABLED=0 $(GO) build <flags>.
func makefileBuildFlags(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^BUILD\s*:?=\s*CGO_ENABLED=0 \$\(GO\) build (.*)$`).FindStringSubmatch(string(raw))
	if m == nil {
		t.Fatal("Makefile: no line BUILD := CGO_ENABLED=0 $(GO) build ...")
	}
	w, err := shellWords(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// goWorkVersion is the major.minor of the go line of go.work.
func goWorkVersion(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(raw))
	if m == nil {
		t.Fatal("go.work has no go line")
	}
	return m[1]
}

// goWorkModules lists the module directories of go.work.
func goWorkModules(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:use\s+)?\./([A-Za-z0-9_./-]+)\s*$`).FindAllStringSubmatch(string(raw), -1) {
		mods = append(mods, m[1])
	}
	if len(mods) == 0 {
		t.Fatal("go.work uses no module")
	}
	return mods
}

// natsServices lists the services that run a NATS server, sorted.
func natsServices(p *project) []string {
	var out []string
	for name, s := range p.Services {
		if isNATS(s) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func isNATS(s *composeService) bool {
	return s != nil && strings.HasPrefix(s.Image, "nats:")
}

func checkRestart(t *testing.T, s *composeService) {
	t.Helper()
	switch s.Restart {
	case "always", "unless-stopped", "on-failure":
	default:
		t.Errorf("restart %q: want unless-stopped, always or on-failure", s.Restart)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
