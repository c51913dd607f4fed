package httpload

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/authmesh/e2e/bench/load"
	"github.com/authmesh/events/benchfig"
)

// The designs an endpoint is measured in: as production serves it, with the authentication step
// skipped, and authorized by a call to account per request.
const (
	authorized = iota
	noAuth
	synchronous
	designs
)

var designNames = [designs]string{"authorized", "no auth", "synchronous"}

// designPrefix is where blog and shop serve each design (bench.go in their cmd).
var designPrefix = [designs]string{"", "/bench/noauth", "/bench/sync"}

// endpoint is an endpoint measured in every design.
type endpoint struct {
	name    string // "blog POST /v1/posts"
	short   string // for file names: "blog"
	service string
	method  string
	path    string
	want    int
	body    []byte
}

var endpoints = []endpoint{
	{name: "blog POST /v1/posts", short: "blog", service: "blog", method: http.MethodPost, path: "/v1/posts",
		want: http.StatusCreated, body: []byte(`{"title":"Load","body":"A post written by the load driver."}`)},
	{name: "shop GET /v1/orders", short: "shop", service: "shop", method: http.MethodGet, path: "/v1/orders",
		want: http.StatusOK},
}

// variant is one load: an endpoint in one design, or a reference.
type variant struct {
	name    string
	service string // the process whose CPU time is read
	next    load.Request
	want    int
	runs    []run
	// profile says whether the service is profiled in the first round; profiled is what the
	// profile showed.
	profile  bool
	profiled string
}

// run is what one load of a variant measured.
type run struct {
	res load.Result
	// cpu and accountCPU are the CPU time the service, and account, used per answer, in µs.
	cpu, accountCPU float64
}

// variants returns, per endpoint, its three designs (in design order), then the references.
func variants(sys *system) []*variant {
	var out []*variant
	for _, e := range endpoints {
		for d := range designs {
			h := http.Header{}
			if d != noAuth {
				h.Set("Authorization", "Bearer "+sys.token)
			}
			url := sys.url(e.service, designPrefix[d]+e.path)
			next := load.Get(url, h)
			if e.method == http.MethodPost {
				next = load.Post(url, h, e.body)
			}
			out = append(out, &variant{name: e.name + ", " + designNames[d], service: e.service, next: next, want: e.want,
				profile: d == authorized})
		}
	}
	return append(out,
		&variant{name: "shop GET /v1/products?limit=1, anonymous", service: "shop",
			next: load.Get(sys.url("shop", "/v1/products?limit=1"), nil), want: http.StatusOK},
		&variant{name: "blog GET /healthz", service: "blog", next: load.Get(sys.url("blog", "/healthz"), nil), want: http.StatusOK},
	)
}

// httpScale is the size of the HTTP loads.
type httpScale struct {
	clients          int
	warmup, duration time.Duration
	rounds           int
}

func httpScaleOf() httpScale {
	if benchfig.Full() {
		return httpScale{clients: 32, warmup: 500 * time.Millisecond, duration: 4 * time.Second, rounds: 5}
	}
	return httpScale{clients: 2, warmup: 50 * time.Millisecond, duration: 300 * time.Millisecond, rounds: 1}
}

// measureHTTP runs every variant sc.rounds times, round after round (so that a slow moment of
// the machine touches every variant alike), and returns them measured.
func measureHTTP(b *testing.B, sys *system, sc httpScale) []*variant {
	vs := variants(sys)
	client := load.NewClient(sc.clients)
	profileSecs := max(1, int(sc.duration/time.Second)-1)
	profileDir := b.TempDir()
	for round := range sc.rounds {
		for _, v := range vs {
			var (
				cpu, accountCPU [2]time.Duration
				marks           int
				prof            *profile
			)
			mark := func() {
				cpu[marks] = cpuOf(b, sys.pid[v.service])
				accountCPU[marks] = cpuOf(b, sys.pid["account"])
				if marks == 0 && round == 0 && v.profile {
					prof = startProfile(b.Context(), sys, v.service, profileSecs, profileDir)
				}
				marks++
			}
			res, err := load.Run(b.Context(), v.next, load.Options{
				Client: client, Clients: sc.clients, Warmup: sc.warmup, Duration: sc.duration, Want: v.want, Mark: mark,
			})
			if err != nil {
				b.Fatalf("%s: %v", v.name, err)
			}
			if prof != nil {
				if v.profiled, err = prof.wait(v.service, profileSecs); err != nil {
					b.Errorf("%s: profile: %v", v.name, err)
				}
			}
			answered := len(res.Latencies)
			if res.OK == 0 || marks != 2 {
				b.Fatalf("%s: %d good answers, %d marks; first failure: %v", v.name, res.OK, marks, res.FirstErr)
			}
			if res.Bad() > 0 {
				b.Errorf("%s, round %d: %d answers of %d not %d (%v); first: %v", v.name, round+1, res.Bad(), answered+res.Failed,
					v.want, res.Statuses, res.FirstErr)
			}
			v.runs = append(v.runs, run{
				res:        res,
				cpu:        perAnswer(cpu[1]-cpu[0], answered),
				accountCPU: perAnswer(accountCPU[1]-accountCPU[0], answered),
			})
			b.Logf("%s, round %d: %.0f req/s, p50 %s, p99 %s, %.0f µs CPU per request", v.name, round+1, res.Rate(),
				res.Quantile(0.5), res.Quantile(0.99), v.runs[len(v.runs)-1].cpu)
		}
	}
	return vs
}

func cpuOf(b *testing.B, pid int) time.Duration {
	d, err := load.CPU(pid)
	if err != nil {
		b.Error(err)
	}
	return d
}

func perAnswer(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// The section's targets.
const (
	noAuthShare     = 0.9 // authorized throughput at least this share of the no-auth baseline's
	synchronousGain = 2.0 // and at least this many times the synchronous design's
)

// httpSection is the section 1-http of measured variants.
func httpSection(vs []*variant, sc httpScale) benchfig.Section {
	s := benchfig.Section{
		ID:      "1-http",
		Title:   "1. Authorized requests over HTTP, against no authorization and the synchronous design",
		Command: "BENCH_SCALE=full BENCH_OUT=$PWD/tmp/bench go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/httpload/",
	}
	rate := func(v *variant) benchfig.Figure { return benchfig.Of(v.name+": req/s", "req/s", each(v, run.rate)...) }
	for i, e := range endpoints {
		d := vs[i*designs : (i+1)*designs]
		auth, base, sync := rate(d[authorized]), rate(d[noAuth]), rate(d[synchronous])
		auth = auth.Against(base.Name, fmt.Sprintf("≥ %g × baseline", noAuthShare), auth.Median >= noAuthShare*base.Median)
		auth.Note = pairedNote(d[authorized], d[noAuth]) + " " + d[authorized].profiled
		vsSync := rate(d[authorized])
		vsSync.Name += ", held to the synchronous design"
		vsSync = vsSync.Against(sync.Name, fmt.Sprintf("≥ %g × baseline", synchronousGain), vsSync.Median >= synchronousGain*sync.Median)
		vsSync.Note = pairedNote(d[authorized], d[synchronous]) + syncBound(d, e)
		s.Figures = append(s.Figures, auth, base, sync, vsSync)
		for _, v := range d {
			s.Figures = append(s.Figures, latencyFigures(v)...)
		}
		for _, v := range d {
			s.Figures = append(s.Figures, benchfig.Of(v.name+": CPU per request", "µs", each(v, run.serviceCPU)...))
		}
		accountCPU := benchfig.Of(d[synchronous].name+": account's CPU per request", "µs", each(d[synchronous], run.accountsCPU)...)
		accountCPU.Note = "account answers GET /v1/users/me for every request of the synchronous design, beside " + e.service + "'s own CPU."
		s.Figures = append(s.Figures, accountCPU)
		s.Plots = append(s.Plots, latencyPlot(e, d))
	}
	for _, v := range vs[len(endpoints)*designs:] {
		s.Figures = append(s.Figures, rate(v))
		s.Figures = append(s.Figures, latencyFigures(v)...)
		s.Figures = append(s.Figures, benchfig.Of(v.name+": CPU per request", "µs", each(v, run.serviceCPU)...))
	}
	s.Plots = append(s.Plots, barPlot("1-http-throughput.svg", "Throughput, median of the runs", "requests per second", vs, run.rate),
		barPlot("1-http-cpu.svg", "CPU time of the service per request, median of the runs", "µs of CPU per request", vs, run.serviceCPU))
	s.Notes = []string{fmt.Sprintf("Each variant: %d clients in a closed loop (each sends its next request when the last is answered) "+
		"on kept-alive connections, %s of warm-up then %s measured, %d rounds, the variants taking turns within each round. "+
		"The load driver runs on the same machine as the services, Postgres and NATS, and takes its share of the CPUs. "+
		"The baselines are the same handlers of blog and shop (server.New) mounted again by the bench build under "+
		"/bench/noauth/ (an authenticator that puts one fixed user, read from the replica once, in the context where "+
		"Require puts the user) and /bench/sync/ (an authenticator that calls account's GET /v1/users/me with the request's "+
		"token over kept-alive connections and uses its answer); their extra http.StripPrefix costs them well under a "+
		"microsecond. CPU per request is the service process's user + system time over the measured window "+
		"(/proc/<pid>/stat) divided by the requests answered in it.",
		sc.clients, sc.warmup, sc.duration, sc.rounds)}
	return s
}

func (r run) rate() float64        { return r.res.Rate() }
func (r run) serviceCPU() float64  { return r.cpu }
func (r run) accountsCPU() float64 { return r.accountCPU }
func (r run) p50() float64         { return ms(r.res.Quantile(0.5)) }
func (r run) p99() float64         { return ms(r.res.Quantile(0.99)) }

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// each returns f of every run of v.
func each(v *variant, f func(run) float64) []float64 {
	out := make([]float64, len(v.runs))
	for i, r := range v.runs {
		out[i] = f(r)
	}
	return out
}

func latencyFigures(v *variant) []benchfig.Figure {
	return []benchfig.Figure{
		benchfig.Of(v.name+": p50 latency", "ms", each(v, run.p50)...),
		benchfig.Of(v.name+": p99 latency", "ms", each(v, run.p99)...),
	}
}

// syncBound says, when the authorized design is less than synchronousGain times the synchronous
// one, what bounds the ratio: the synchronous design adds account's work to the endpoint's own,
// so the ratio is at most 1 + account's share, on a machine whose cores every process shares.
func syncBound(d []*variant, e endpoint) string {
	own := median(each(d[authorized], run.serviceCPU))
	added := median(each(d[synchronous], run.serviceCPU)) - own + median(each(d[synchronous], run.accountsCPU))
	if median(each(d[authorized], run.rate)) >= synchronousGain*median(each(d[synchronous], run.rate)) {
		return ""
	}
	return fmt.Sprintf(" What bounds it: the synchronous design adds about %.0f µs of CPU per request (account's answer and %s's "+
		"call), beside %s's own %.0f µs and Postgres's work for the endpoint itself; the same two cores run them all, so "+
		"the gain is the share of the machine that account's call takes, and an endpoint that writes to Postgres, as this "+
		"one does, costs more than that call.", added, e.service, e.service, own)
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return benchfig.Quantile(xs, 0.5)
}

// pairedNote gives the spread of the ratio of a's throughput to b's, round by round: rounds ran
// a and b a few seconds apart, so their ratio varies less than either.
func pairedNote(a, b *variant) string {
	var r []float64
	for i := range min(len(a.runs), len(b.runs)) {
		r = append(r, a.runs[i].rate()/b.runs[i].rate())
	}
	slices.Sort(r)
	return fmt.Sprintf("round by round, the ratio was %.2f–%.2f (median %.2f).", r[0], r[len(r)-1], benchfig.Quantile(r, 0.5))
}

// latencyPlot is the distribution of an endpoint's latencies in its three designs, every round
// together.
func latencyPlot(e endpoint, d []*variant) benchfig.Plot {
	p := benchfig.Plot{
		File: "1-http-" + e.short + "-latency.svg", Title: "Latency of " + e.name + ": authorized, no auth, synchronous",
		Kind: benchfig.KindCDF, XLabel: "ms (log scale)", YLabel: "share of requests answered within", LogX: true,
	}
	for _, v := range d {
		var all []time.Duration
		for _, r := range v.runs {
			all = append(all, r.res.Latencies...)
		}
		slices.Sort(all)
		p.Series = append(p.Series, benchfig.Series{Name: designOf(v.name, e.name), Y: distribution(all, 500)})
	}
	return p
}

func designOf(variant, endpoint string) string { return variant[len(endpoint)+2:] }

// distribution returns n+1 evenly spaced quantiles of sorted latencies, in ms: the shape of the
// distribution, small enough to save.
func distribution(sorted []time.Duration, n int) []float64 {
	if len(sorted) == 0 {
		return nil
	}
	out := make([]float64, n+1)
	for i := range out {
		out[i] = ms(sorted[i*(len(sorted)-1)/n])
	}
	return out
}

func barPlot(file, title, yLabel string, vs []*variant, f func(run) float64) benchfig.Plot {
	p := benchfig.Plot{File: file, Title: title, Kind: benchfig.KindBar, YLabel: yLabel}
	for _, v := range vs {
		p.Series = append(p.Series, benchfig.Series{Name: v.name, Y: []float64{benchfig.Of("", "", each(v, f)...).Median}})
	}
	return p
}
