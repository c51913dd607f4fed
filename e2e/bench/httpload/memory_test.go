package httpload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/bench/load"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events/benchfig"
)

// stormScale is the size of the storms of logins.
type stormScale struct {
	logins int           // concurrent logins in a storm
	after  time.Duration // how long memory is followed after the last answer
	storms int
}

func stormScaleOf() stormScale {
	if benchfig.Full() {
		return stormScale{logins: 200, after: 5 * time.Second, storms: 3}
	}
	return stormScale{logins: 20, after: 1500 * time.Millisecond, storms: 1}
}

// Memory targets, MiB.
const (
	idleTarget = 40
	loadTarget = 100
	// stormMargin is what the storm's bound allows beside the hashes in flight: the idle budget.
	stormMargin = idleTarget
	// returnedMargin is how far above its RSS before a storm account may stay after it.
	returnedMargin = 8
)

// stormWait bounds an answer in a storm: account's Hasher waits at most 2 s for a slot
// (account/internal/password), then the hash and the answer take a fraction of a second.
const stormWait = 3 * time.Second

// storm is what one storm of logins measured.
type storm struct {
	statuses map[int]int
	failed   int           // no answer
	slowest  time.Duration // the longest answer
	before   int64         // account's RSS just before, bytes
	peak     int64         // the largest RSS sampled from the start to after
	after    int64         // RSS at the end, sc.after past the last answer
	trace    []rssPoint
}

type rssPoint struct {
	at  time.Duration // since the storm started
	rss int64
}

// runStorm sends sc.logins logins of the load's user at once, as many clients each on its own
// connection, and follows account's memory meanwhile and for sc.after after the last answer.
func runStorm(b *testing.B, sys *system, sc stormScale) storm {
	pid := sys.pid["account"]
	time.Sleep(settle) // past account's release of its hashes' memory after the last burst
	before, err := load.ReadMemory(pid)
	if err != nil {
		b.Fatal(err)
	}
	st := storm{statuses: map[int]int{}, before: before.RSS}
	start := time.Now()
	tctx, stopTrace := context.WithCancel(b.Context())
	var traced sync.WaitGroup
	traced.Go(func() { st.trace = traceRSS(tctx, pid, start) })

	users := stormUsers(b, sys, sc.logins)
	client := load.NewClient(sc.logins)
	client.Timeout = 30 * time.Second
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		gate = make(chan struct{})
	)
	for i := range sc.logins {
		body, err := json.Marshal(map[string]string{"email": users[i], "password": apitest.Password})
		if err != nil {
			b.Fatal(err)
		}
		// A client address of its own, beside an email of its own: no throttle applies.
		from := fmt.Sprintf("10.9.%d.%d", i/250, i%250+1)
		wg.Go(func() {
			<-gate
			t0 := time.Now()
			status, err := post(b.Context(), client, sys.url("account", "/v1/tokens"), from, body)
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				st.failed++
				return
			}
			st.statuses[status]++
			st.slowest = max(st.slowest, took)
		})
	}
	close(gate)
	wg.Wait()
	time.Sleep(sc.after)
	stopTrace()
	traced.Wait()
	for _, p := range st.trace {
		st.peak = max(st.peak, p.rss)
	}
	st.after = st.trace[len(st.trace)-1].rss
	client.CloseIdleConnections()
	return st
}

// traceRSS samples the RSS of pid every 10 ms until ctx is done.
func traceRSS(ctx context.Context, pid int, start time.Time) []rssPoint {
	var out []rssPoint
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if m, err := load.ReadMemory(pid); err == nil {
			out = append(out, rssPoint{time.Since(start), m.RSS})
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

// stormUsers returns the emails of n users with apitest.Password: those the registration load
// made, and more registered now if it made fewer.
func stormUsers(b *testing.B, sys *system, n int) []string {
	for sys.registered.Load() < int64(n) {
		apitest.Call(b, "POST", sys.url("account", "/v1/users"), "", map[string]any{
			"email": registeredEmail(sys.registered.Add(1)), "password": apitest.Password, "display_name": "Registered",
		}).Want(b, http.StatusCreated, "register a user for the storm")
	}
	out := make([]string, n)
	for i := range out {
		out[i] = registeredEmail(int64(i + 1))
	}
	return out
}

// post sends body to url as the client at address from (X-Forwarded-For) and returns the status.
func post(ctx context.Context, client *http.Client, url, from string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", from)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// memorySection is section 5-memory: the services' memory idle and under the HTTP load, and
// account's through storms of logins.
func memorySection(sys *system, underLoad map[string]int64, storms []storm, params argonParams, sc stormScale) benchfig.Section {
	s := benchfig.Section{
		ID:      "5-memory",
		Title:   "5. Memory: idle, under the HTTP load, and through a storm of logins",
		Command: "BENCH_SCALE=full BENCH_OUT=$PWD/tmp/bench go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/httpload/",
	}
	bars := benchfig.Plot{File: "5-memory-rss.svg", Title: "Resident memory of each service", Kind: benchfig.KindBar, YLabel: "MiB"}
	for _, name := range stack.Services {
		idle := benchfig.Of(name+" idle: RSS", "MiB", load.MiB(sys.idle[name].RSS))
		idle = idle.Goal(fmt.Sprintf("≤ %d MiB", idleTarget), idle.Median <= idleTarget)
		busy := benchfig.Of(name+" under the HTTP load: largest RSS", "MiB", load.MiB(underLoad[name]))
		busy = busy.Goal(fmt.Sprintf("≤ %d MiB", loadTarget), busy.Median <= loadTarget)
		if name == "account" {
			busy.Note = "account's part of the HTTP load is the synchronous design's GET /v1/users/me; its logins are the storms below."
		}
		s.Figures = append(s.Figures, idle, busy)
		bars.Series = append(bars.Series,
			benchfig.Series{Name: name + " idle", Y: []float64{idle.Median}},
			benchfig.Series{Name: name + " under load", Y: []float64{busy.Median}})
	}

	bound := float64(slots())*float64(params.memory)/1024 + stormMargin
	var peaks, returned, slowest, others, busy, ok []float64
	for _, st := range storms {
		peaks = append(peaks, load.MiB(st.peak))
		returned = append(returned, load.MiB(st.after-st.before))
		slowest = append(slowest, st.slowest.Seconds())
		n := float64(st.failed)
		for status, c := range st.statuses {
			if status != http.StatusOK && status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
				n += float64(c)
			}
		}
		others = append(others, n)
		busy = append(busy, float64(st.statuses[http.StatusServiceUnavailable]+st.statuses[http.StatusTooManyRequests]))
		ok = append(ok, float64(st.statuses[http.StatusOK]))
	}
	storm := fmt.Sprintf("account, storm of %d logins", sc.logins)
	peak := benchfig.Of(storm+": largest RSS", "MiB", peaks...)
	peak = peak.Goal(fmt.Sprintf("≤ %.0f MiB", bound), peak.Median <= bound)
	peak.Note = fmt.Sprintf("the bound is %d hashing slots × %.0f MiB of argon2 memory + %d MiB (the idle budget).",
		slots(), float64(params.memory)/1024, stormMargin)
	after := benchfig.Of(fmt.Sprintf("%s: RSS %s after the last answer, less the RSS before", storm, sc.after), "MiB", returned...)
	after = after.Goal(fmt.Sprintf("≤ %d MiB", returnedMargin), after.Median <= returnedMargin)
	slow := benchfig.Of(storm+": slowest answer of all the storms", "s", slices.Max(slowest))
	slow = slow.Goal(fmt.Sprintf("≤ %g s", stormWait.Seconds()), slow.Median <= stormWait.Seconds())
	slow.Note = fmt.Sprintf("storm by storm: %s s. A login waits at most 2 s for a hashing slot, then is answered "+
		"503 with Retry-After. Before that wait it reads the user and begins its attempt in a transaction, on account's "+
		"database pool: those waits are not bounded by the hasher's.", joinNumbers(slowest))
	bad := benchfig.Of(storm+": answers other than 200, 429 and 503, or none", "answers", others...)
	bad = bad.Goal("none", slices.Max(others) == 0)
	s.Figures = append(s.Figures, peak, after, slow,
		benchfig.Of(storm+": logged in (200)", "answers", ok...),
		benchfig.Of(storm+": turned away (429, 503)", "answers", busy...),
		bad)

	trace := benchfig.Plot{File: "5-memory-storm.svg", Title: fmt.Sprintf("account's RSS through storms of %d logins", sc.logins),
		Kind: benchfig.KindLine, XLabel: "seconds since the storm began", YLabel: "MiB"}
	var end float64
	for i, st := range storms {
		var x, y []float64
		for _, p := range st.trace {
			x, y = append(x, p.at.Seconds()), append(y, load.MiB(p.rss))
		}
		end = max(end, x[len(x)-1])
		trace.Series = append(trace.Series, benchfig.Series{Name: fmt.Sprintf("storm %d", i+1), X: x, Y: y})
	}
	trace.Series = append(trace.Series, benchfig.Series{Name: "bound", X: []float64{0, end}, Y: []float64{bound, bound}})
	s.Plots = []benchfig.Plot{bars, trace}
	s.Notes = []string{fmt.Sprintf("RSS is VmRSS of /proc/<pid>/status. Idle: %s after every service is ready, before any "+
		"request. Under load: the largest of samples taken every 100 ms through the HTTP section's loads. A storm: %d "+
		"clients, each on a connection of its own, log in at the same moment, each as a user of its own from an address "+
		"of its own (X-Forwarded-For, account trusting the loopback as its proxy), with the right password, so that no "+
		"throttle applies; account's RSS is sampled every 10 ms from the start until %s after the "+
		"last answer; %d storms, each after %s of quiet.", settle, sc.logins, sc.after, sc.storms, settle),
		"What bounds account's memory in a storm: its Hasher (account/internal/password) runs at most GOMAXPROCS " +
			"hashes at once, each with one argon2 array of m KiB, and each hash collects the garbage before it gives " +
			"its slot up, so that there is never more than one array per slot; once no hash has run for a second, it " +
			"returns the free memory to the operating system. Without these two, the garbage collector let the " +
			"finished arrays pile up to twice the live heap, and the runtime kept the memory after the burst: the " +
			"issue measured 100–115 MiB after a burst of 64 logins, returned or not depending on timing."}
	return s
}

// joinNumbers prints vs with two decimals, comma-separated.
func joinNumbers(vs []float64) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(out, ", ")
}
