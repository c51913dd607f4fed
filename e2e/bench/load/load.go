// Package load is the load driver of the report benchmarks: a closed loop of HTTP clients, each
// sending its next request when the previous one is answered, timing every answer; and readers of
// what a process costs meanwhile (CPU time and memory, from /proc).
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// NewClient returns a keep-alive client for clients concurrent requests to one host: one
// connection each, kept between requests, so that the load measures requests and not TCP
// handshakes. Every request is bounded by a timeout.
func NewClient(clients int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        clients,
			MaxIdleConnsPerHost: clients,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// Request returns the next request of a load; it is called for every request, as a body is read
// once.
type Request func(ctx context.Context) (*http.Request, error)

// Get returns the Request of a GET of url with the given header.
func Get(url string, header http.Header) Request {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header = cloneHeader(header)
		return req, nil
	}
}

// Post returns the Request of a POST of body (JSON) to url with the given header.
func Post(url string, header http.Header, body []byte) Request {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = cloneHeader(header)
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}
}

// cloneHeader returns a copy of h that a request may add to (nil has no map to add to).
func cloneHeader(h http.Header) http.Header {
	if h == nil {
		return http.Header{}
	}
	return h.Clone()
}

// Options configure Run.
type Options struct {
	Client   *http.Client // NewClient(Clients) when nil
	Clients  int          // concurrent clients, each with one request in flight
	Warmup   time.Duration
	Duration time.Duration // of the measured window, after the warmup
	// Want is the status of a good answer (200 when zero); other answers are counted apart.
	Want int
	// Mark, when set, is called as the measured window opens and again as it closes, so that the
	// caller can read a process's CPU time over exactly the window.
	Mark func()
}

// Result is what one Run measured in its window.
type Result struct {
	// OK counts the answers with the wanted status; Rate is OK per second of the window.
	OK int
	// Statuses counts every answer by status; Failed counts requests that got no answer.
	Statuses map[int]int
	Failed   int
	// FirstErr is the first failure, or the body of the first answer that was not wanted.
	FirstErr error
	Window   time.Duration
	// Latencies of every answer in the window, sorted.
	Latencies []time.Duration
}

// Rate is the good answers per second.
func (r Result) Rate() float64 { return float64(r.OK) / r.Window.Seconds() }

// Quantile returns the q-quantile of the latencies (0 with none).
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[int(q*float64(len(r.Latencies)-1))]
}

// Bad is the number of answers and failures that were not wanted.
func (r Result) Bad() int { return r.Failed + len(r.Latencies) - r.OK }

// Run sends requests from opts.Clients clients for opts.Warmup, then for opts.Duration, and
// returns what was answered in the second period: a request counts when it was sent in the
// window. It returns an error only for a request it could not make, or ctx's end.
func Run(ctx context.Context, next Request, opts Options) (Result, error) {
	if opts.Clients < 1 || opts.Duration <= 0 {
		return Result{}, errors.New("load: Clients and Duration must be positive")
	}
	client := opts.Client
	if client == nil {
		client = NewClient(opts.Clients)
	}
	want := opts.Want
	if want == 0 {
		want = http.StatusOK
	}
	start := time.Now()
	open := start.Add(opts.Warmup)
	end := open.Add(opts.Duration)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tally := make([]clientTally, opts.Clients)
	var wg sync.WaitGroup
	for i := range tally {
		wg.Go(func() { tally[i] = loop(ctx, client, next, want, open, end) })
	}
	if opts.Mark != nil {
		wg.Go(func() { mark(ctx, opts.Mark, open, end) })
	}
	wg.Wait()

	res := Result{Statuses: map[int]int{}, Window: opts.Duration}
	for _, t := range tally {
		if t.err != nil {
			return Result{}, t.err
		}
		res.OK += t.ok
		res.Failed += t.failed
		res.Latencies = append(res.Latencies, t.latencies...)
		for s, n := range t.statuses {
			res.Statuses[s] += n
		}
		if res.FirstErr == nil {
			res.FirstErr = t.firstErr
		}
	}
	slices.Sort(res.Latencies)
	return res, ctx.Err()
}

// mark calls f at open and at end.
func mark(ctx context.Context, f func(), open, end time.Time) {
	for _, at := range []time.Time{open, end} {
		t := time.NewTimer(time.Until(at))
		select {
		case <-t.C:
			f()
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// clientTally is what one client saw.
type clientTally struct {
	ok, failed int
	statuses   map[int]int
	latencies  []time.Duration
	firstErr   error
	err        error // a request that could not be made: the run is void
}

// loop is one client: requests one after the other until end.
func loop(ctx context.Context, client *http.Client, next Request, want int, open, end time.Time) clientTally {
	t := clientTally{statuses: map[int]int{}}
	for ctx.Err() == nil {
		sent := time.Now()
		if !sent.Before(end) {
			break
		}
		req, err := next(ctx)
		if err != nil {
			t.err = err
			return t
		}
		status, err := do(client, req, want)
		took := time.Since(sent)
		if sent.Before(open) {
			continue // warming up
		}
		if err != nil && status == 0 {
			t.failed++
			if t.firstErr == nil {
				t.firstErr = err
			}
			continue
		}
		t.statuses[status]++
		t.latencies = append(t.latencies, took)
		if status == want {
			t.ok++
		} else if t.firstErr == nil {
			t.firstErr = err
		}
	}
	return t
}

// do sends req and reads the whole answer (so the connection is kept). It returns the status, and
// an error for no answer (status 0) or for an answer other than want (with its body).
func do(client *http.Client, req *http.Request, want int) (int, error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, fmt.Errorf("%s %s: status %d, want %d: %s", req.Method, req.URL.Path, resp.StatusCode, want, body)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}
