package httpload

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/bench/load"
	"github.com/authmesh/events/benchfig"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/argon2"
)

// loginScale is the size of the registration and login loads.
type loginScale struct {
	clients          int
	warmup, duration time.Duration
	runs             int
	hashes           int // argon2id hashes timed in this process
}

// slots is how many hashes account runs at once: its Hasher has GOMAXPROCS slots, and account
// runs on this machine with the environment of this process.
func slots() int { return runtime.GOMAXPROCS(0) }

func loginScaleOf() loginScale {
	if benchfig.Full() {
		// Twice the slots: every slot busy, a request waiting for each, none turned away.
		return loginScale{clients: 2 * slots(), warmup: 300 * time.Millisecond, duration: 3 * time.Second, runs: 5, hashes: 7}
	}
	return loginScale{clients: 2, duration: 300 * time.Millisecond, runs: 1, hashes: 1}
}

// argonParams are the parameters of a PHC string $argon2id$v=19$m=..,t=..,p=..$salt$hash.
type argonParams struct {
	memory, time uint32 // KiB, passes
	threads      uint8
	keyLen       uint32
}

func (p argonParams) String() string {
	return fmt.Sprintf("m=%d KiB (%.0f MiB), t=%d, p=%d", p.memory, float64(p.memory)/1024, p.time, p.threads)
}

// storedParams reads the parameters of the load user's password hash in account's database: the
// parameters account really uses.
func storedParams(b *testing.B, sys *system) argonParams {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, sys.databaseURL("account"))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var phc string
	if err := conn.QueryRow(ctx, `SELECT password_hash FROM users WHERE lower(email) = lower($1)`, sys.email).Scan(&phc); err != nil {
		b.Fatal(err)
	}
	parts := strings.Split(phc, "$")
	var p argonParams
	if len(parts) != 6 || parts[1] != "argon2id" {
		b.Fatalf("password hash %.20q…: not an argon2id PHC string", phc)
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil {
		b.Fatalf("password hash parameters %q: %v", parts[3], err)
	}
	p.keyLen = uint32(len(parts[5]) * 6 / 8) // unpadded base64
	return p
}

// hashTimes times n argon2id hashes with p in this process, in ms.
func hashTimes(p argonParams, n int) []float64 {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	var out []float64
	for range n {
		start := time.Now()
		argon2.IDKey([]byte(apitest.Password), salt, p.time, p.memory, p.threads, p.keyLen)
		out = append(out, ms(time.Since(start)))
	}
	return out
}

// loginSection measures registrations and logins, and the hash behind each: section 6-login.
func loginSection(b *testing.B, sys *system, sc loginScale) (benchfig.Section, argonParams) {
	params := storedParams(b, sys)
	hash := benchfig.Of("argon2id hash in this process ("+params.String()+"): time", "ms", hashTimes(params, sc.hashes)...)

	register := func(ctx context.Context) (*http.Request, error) {
		body, err := json.Marshal(map[string]string{
			"email": registeredEmail(sys.registered.Add(1)), "password": apitest.Password, "display_name": "Registered",
		})
		if err != nil {
			return nil, err
		}
		return load.Post(sys.url("account", "/v1/users"), nil, body)(ctx)
	}
	loginBody, err := json.Marshal(map[string]string{"email": sys.email, "password": apitest.Password})
	if err != nil {
		b.Fatal(err)
	}
	kinds := []struct {
		name string
		next load.Request
		want int
		runs []load.Result
	}{
		{name: "registration POST /v1/users", next: register, want: http.StatusCreated},
		{name: "login POST /v1/tokens", next: load.Post(sys.url("account", "/v1/tokens"), nil, loginBody), want: http.StatusOK},
	}
	client := load.NewClient(sc.clients)
	for range sc.runs {
		for i := range kinds {
			k := &kinds[i]
			res, err := load.Run(b.Context(), k.next, load.Options{Client: client, Clients: sc.clients,
				Warmup: sc.warmup, Duration: sc.duration, Want: k.want})
			if err != nil {
				b.Fatal(err)
			}
			if res.OK == 0 || res.Bad() > 0 {
				b.Errorf("%s: %d good answers, %d others (%v); first: %v", k.name, res.OK, res.Bad(), res.Statuses, res.FirstErr)
			}
			k.runs = append(k.runs, res)
		}
	}

	bound := benchfig.Of(fmt.Sprintf("what hashing allows: %d slots ÷ time per hash", slots()), "req/s", 1000*float64(slots())/hash.Median)
	bound.Note = "account's Hasher runs at most GOMAXPROCS hashes at once, so that their memory stays bounded."
	s := benchfig.Section{
		ID:      "6-login",
		Title:   "6. Registration and login",
		Command: "BENCH_SCALE=full BENCH_OUT=$PWD/tmp/bench go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/httpload/",
		Figures: []benchfig.Figure{hash, bound},
	}
	for _, k := range kinds {
		rate := benchfig.Of(k.name+": req/s", "req/s", results(k.runs, load.Result.Rate)...)
		rate.Baseline = bound.Name
		s.Figures = append(s.Figures, rate,
			benchfig.Of(k.name+": p50 latency", "ms", results(k.runs, func(r load.Result) float64 { return ms(r.Quantile(0.5)) })...),
			benchfig.Of(k.name+": p99 latency", "ms", results(k.runs, func(r load.Result) float64 { return ms(r.Quantile(0.99)) })...))
	}
	s.Notes = []string{fmt.Sprintf("Passwords are hashed with argon2id, %s (OWASP's recommendation), read from the hash "+
		"account stored for the load's user. A registration hashes once and writes the user and its event in one "+
		"transaction; a login verifies one hash and signs a token. Both are bound by the hash: %d clients keep account's %d "+
		"hashing slots busy, %d runs of %s after %s of warm-up, registrations and logins taking turns. The time per "+
		"hash is measured in the benchmark's process while the services are idle; a ratio of a rate to what hashing "+
		"allows near 1 would mean that the hash is all that bounds it, and what is missing goes to the rest of the "+
		"request (the database, the token, HTTP, a garbage collection after each hash) and to the load driver, all on "+
		"the same CPUs.",
		params, sc.clients, slots(), sc.runs, sc.duration, sc.warmup)}
	return s, params
}

func results(rs []load.Result, f func(load.Result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}
