package authcost

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/benchfig"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// scale is how much one run measures: runs of ops calls each (fewer for the slow parts).
type scale struct {
	runs   int
	ops    int // calls of Require per run
	parts  int // calls of each part per run
	trips  int // NATS round trips per run
	allocs int // calls that AllocsPerRun averages over
}

func scaleOf() scale {
	if benchfig.Full() {
		return scale{runs: 7, ops: 5000, parts: 2000, trips: 500, allocs: 1000}
	}
	return scale{runs: 2, ops: 200, parts: 100, trips: 20, allocs: 50}
}

const overheadTarget = 5.0 // µs, p50 of Require for a token seen before

// BenchmarkReportAuth measures the cost of authorizing a request in process, and its parts'
// limits (see the package doc). It ignores b.N.
func BenchmarkReportAuth(b *testing.B) {
	sc := scaleOf()
	ctx := b.Context()
	w := newWiring(b)

	// The request blog would get, recorded once; the handler behind Require does nothing but
	// check that the user is in the context.
	var passed int
	noop := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if u, ok := auth.UserFrom(r.Context()); ok && u.ID == w.user.ID {
			passed++
		}
	})
	require := w.authn.Require(noop)
	req := httptest.NewRequest(http.MethodPost, "/v1/posts", nil)
	req.Header.Set("Authorization", "Bearer "+w.token)
	rw := &discard{}
	authorize := func() { require.ServeHTTP(rw, req) }
	noAuth := func() { noop.ServeHTTP(rw, req.WithContext(auth.WithUser(req.Context(), w.user))) }
	authorize() // the token is seen once before the timing
	if rw.status != 0 || passed != 1 {
		b.Fatalf("Require answered %d and let %d requests through, want the request let through", rw.status, passed)
	}

	// The parts: the token's signature alone; a verify of tokens never seen (no cache can answer);
	// the replica row by primary key; a JetStream round trip.
	signed, sig := signature(b, w.token)
	pub := w.issuer.Key.Public().(ed25519.PublicKey)
	fresh := make([]string, sc.parts)
	for i := range fresh {
		fresh[i] = w.issuer.Token(b, w.user)
	}
	var next int
	verify := func() {
		if _, err := w.verifier.Verify(fresh[next%len(fresh)]); err != nil {
			b.Fatal(err)
		}
		next++
	}
	sel := func() {
		if err := selectUser(ctx, w, w.user); err != nil {
			b.Fatal(err)
		}
	}
	trip := roundTrip(b, w.nats)

	type measured struct {
		name   string
		ops    int
		f      func()
		p50    []float64
		p99    []float64
		all    []float64
		allocs []float64
	}
	ms := []*measured{
		{name: "Require around a no-op handler, token seen before", ops: sc.ops, f: authorize},
		{name: "the same handler, the user put in the context without authentication", ops: sc.ops, f: noAuth},
		{name: "Ed25519 verify of the token's signature (crypto/ed25519)", ops: sc.parts, f: func() {
			if !ed25519.Verify(pub, signed, sig) {
				b.Fatal("signature does not verify")
			}
		}},
		{name: "jwt verify of a token never seen (auth.Verifier)", ops: sc.parts, f: verify},
		{name: "primary-key SELECT of the user's replica row", ops: sc.parts, f: sel},
		{name: "JetStream publish → consume round trip", ops: sc.trips, f: trip},
	}
	// Runs interleave the measurements, so that a slow moment of the machine touches all alike.
	for range sc.runs {
		for _, m := range ms {
			d := timeEach(m.ops, m.f)
			m.p50 = append(m.p50, benchfig.Quantile(d, 0.5))
			m.p99 = append(m.p99, benchfig.Quantile(d, 0.99))
			m.all = append(m.all, d...)
		}
		ms[0].allocs = append(ms[0].allocs, testing.AllocsPerRun(sc.allocs, authorize))
		ms[1].allocs = append(ms[1].allocs, testing.AllocsPerRun(sc.allocs, noAuth))
	}
	if rw.status != 0 {
		b.Fatalf("Require answered %d during the runs, want every request let through", rw.status)
	}

	auth50 := benchfig.Of(ms[0].name+": p50", "µs", ms[0].p50...)
	auth50 = auth50.Goal(fmt.Sprintf("p50 ≤ %g µs", overheadTarget), auth50.Median <= overheadTarget)
	part := func(i int) benchfig.Figure { return benchfig.Of(ms[i].name+": p50", "µs", ms[i].p50...) }
	verify50, select50 := part(3), part(4)
	auth50.Note = overheadNote(auth50, verify50, select50)
	figures := []benchfig.Figure{
		auth50,
		benchfig.Of(ms[0].name+": p99", "µs", ms[0].p99...),
		benchfig.Of("allocations per authorized request (Require)", "allocs", ms[0].allocs...),
		part(1),
		benchfig.Of("allocations per request without authentication", "allocs", ms[1].allocs...),
		part(2), verify50, select50, part(5),
	}
	var series []benchfig.Series
	for _, m := range ms {
		series = append(series, benchfig.Series{Name: m.name, Y: quantiles(m.all, 500)})
	}
	err := benchfig.Save(benchfig.Section{
		ID:      "1-auth",
		Title:   "1. Authorization in process: overhead and the parts' limits",
		Command: "BENCH_SCALE=full BENCH_OUT=$PWD/tmp/bench go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/authcost/",
		Figures: figures,
		Plots: []benchfig.Plot{{
			File: "1-auth-latency.svg", Title: "Time per call, in process", Kind: benchfig.KindCDF,
			XLabel: "µs per call (log scale)", LogX: true, Series: series,
		}},
		Notes: []string{fmt.Sprintf("blog's wiring in one process: auth.New(&auth.Verifier{…}, replica, log).Require "+
			"over a replica fed by the USERS stream of an embedded NATS server and kept in a fresh Postgres database "+
			"on the local server. Each call is timed on its own (time.Now around it) on one recorded request; "+
			"%d runs, interleaved, of %d calls of Require, %d of each part and %d NATS round trips. The round trip "+
			"is a JetStream publish, acknowledged by the server (file storage), until an ordered consumer has the message.",
			sc.runs, sc.ops, sc.parts, sc.trips)},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("Require p50 %.1f µs (%.0f allocs); Ed25519 %.1f µs, jwt verify %.1f µs, SELECT %.1f µs, NATS round trip %.1f µs",
		auth50.Median, figures[2].Median, figures[5].Median, verify50.Median, select50.Median, figures[8].Median)
}

// overheadNote says what bounds Require's p50, from the figures of the same run.
func overheadNote(auth50, verify50, select50 benchfig.Figure) string {
	sum := verify50.Median + select50.Median
	if auth50.Median >= 0.5*sum {
		return fmt.Sprintf("about an uncached jwt verify (%.1f µs) plus a replica SELECT (%.1f µs) = %.1f µs: "+
			"neither the verified token nor the user is kept in memory between requests.", verify50.Median, select50.Median, sum)
	}
	return fmt.Sprintf("well under an uncached jwt verify plus a replica SELECT (%.1f + %.1f µs): the verified token "+
		"and the user are answered from memory.", verify50.Median, select50.Median)
}

// wiring is events/auth over events/replica, as blog wires them, with what the measurements need.
type wiring struct {
	issuer   *authtest.Issuer
	verifier *auth.Verifier
	authn    *auth.Authenticator
	user     events.User
	token    string
	pool     *pgxpool.Pool
	nats     *natstest.Server
}

func newWiring(b *testing.B) *wiring {
	ctx := b.Context()
	pool := pgtest.NewPool(b)
	if err := replica.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	srv := natstest.New(b)
	w := &wiring{issuer: authtest.NewIssuer(b), user: authtest.NewUser(), pool: pool, nats: srv}
	authtest.PublishUser(b, srv.JetStream(b, natstest.Account), events.UserCreated, w.user)

	rep, err := replica.New(replica.Config{Pool: pool, JS: srv.JetStream(b, natstest.Blog), Durable: "blog"})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rep.Run(runCtx) })
	b.Cleanup(func() { stop(); wg.Wait() })
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := rep.User(waitCtx, w.user.ID, w.user.Version); err == nil {
			break
		} else if waitCtx.Err() != nil {
			b.Fatalf("the replica did not get the user: %v", err)
		}
	}

	keys, err := auth.NewKeySet(w.issuer.JWKS(b))
	if err != nil {
		b.Fatal(err)
	}
	w.verifier = &auth.Verifier{Keys: keys, Issuer: w.issuer.Issuer, Audience: "blog"}
	w.authn = auth.New(w.verifier, rep, nil)
	w.token = w.issuer.Token(b, w.user)
	return w
}

// selectUser reads u's replica row by its primary key.
func selectUser(ctx context.Context, w *wiring, u events.User) error {
	var got events.User
	err := w.pool.QueryRow(ctx, `SELECT email, display_name, roles, status, version FROM replica_users WHERE id = $1`, u.ID).
		Scan(&got.Email, &got.DisplayName, &got.Roles, &got.Status, &got.Version)
	if err == nil && got.Version != u.Version {
		err = fmt.Errorf("replica row at version %d, want %d", got.Version, u.Version)
	}
	return err
}

// roundTrip returns a call that publishes a message to a stream of its own and waits until an
// ordered consumer has it.
func roundTrip(b *testing.B, srv *natstest.Server) func() {
	ctx := b.Context()
	js := srv.JetStream(b, natstest.Ops)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) { got <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	payload := []byte(`{"type":"user.role_changed"}`)
	return func() {
		if _, err := js.Publish(ctx, "bench.rt", payload); err != nil {
			b.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			b.Fatal("the consumer did not get the message within 10 s")
		}
	}
}

// signature returns the signing input and the signature of a JWS compact token.
func signature(b *testing.B, token string) ([]byte, []byte) {
	i := strings.LastIndexByte(token, '.')
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	return []byte(token[:i]), sig
}

// timeEach calls f n times, timing each call, and returns the times in µs, sorted.
func timeEach(n int, f func()) []float64 {
	d := make([]float64, n)
	for i := range d {
		start := time.Now()
		f()
		d[i] = float64(time.Since(start).Nanoseconds()) / 1e3
	}
	slices.Sort(d)
	return d
}

// quantiles returns n+1 evenly spaced quantiles of samples: their distribution, small enough to
// save.
func quantiles(samples []float64, n int) []float64 {
	s := slices.Clone(samples)
	slices.Sort(s)
	out := make([]float64, n+1)
	for i := range out {
		out[i] = benchfig.Quantile(s, float64(i)/float64(n))
	}
	return out
}

// discard is a ResponseWriter that keeps only the status, for a handler that should write
// nothing.
type discard struct {
	header http.Header
	status int
}

func (d *discard) Header() http.Header {
	if d.header == nil {
		d.header = http.Header{}
	}
	return d.header
}

func (d *discard) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.status = http.StatusOK
	}
	return len(p), nil
}

func (d *discard) WriteHeader(status int) { d.status = status }
