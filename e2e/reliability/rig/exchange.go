package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"
)

// Request is one request of a check, for Exchange.
type Request struct {
	Service, Method, Path string
	// Token is sent as a bearer token unless empty.
	Token string
	// Header is added to the request (an Idempotency-Key, an X-Forwarded-For).
	Header http.Header
	// Body is sent encoded as JSON; nil sends no body.
	Body any
	// Timeout bounds the request; the workload's 5 s when zero. A check that overloads a service
	// on purpose gives more, to measure the latencies rather than cut them.
	Timeout time.Duration
}

// Answer is what Exchange got back. Status is 0 when no answer came (-1 when the connection was
// refused: the request never reached the service), and Err then says why.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
	// Took is the time from sending the request to having read the whole answer.
	Took time.Duration
	Err  error
}

// Exchange sends req and returns the whole answer, headers and latency included. It is counted
// and judged like every request of the workload (Answers, Count, Bad).
func (w *Workload) Exchange(ctx context.Context, req Request) Answer {
	return w.exchange(ctx, w.sys.URL[req.Service]+req.Path, req)
}

// exchange sends req to url and counts its answer. A 5xx other than a 503 with Retry-After, or an
// error answer that leaks internals, is recorded as bad. Only error answers are searched for
// leaks: a success carries what users wrote and tokens, in which any word may appear (a token's
// base64 holds "pgx" once in a few dozen).
func (w *Workload) exchange(ctx context.Context, url string, req Request) Answer {
	var rd io.Reader
	if req.Body != nil {
		b, err := json.Marshal(req.Body)
		if err != nil {
			panic(err)
		}
		rd = bytes.NewReader(b)
	}
	client, timeout := w.client, requestTimeout
	if req.Timeout > 0 {
		// The client's own timeout would cut a longer request: a client of the same connections
		// without it.
		client, timeout = &http.Client{Transport: w.client.Transport}, req.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, req.Method, url, rd)
	if err != nil {
		panic(err)
	}
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	if req.Body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.Token)
	}
	start := time.Now()
	resp, err := client.Do(hr)
	if err != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		if errors.Is(err, syscall.ECONNREFUSED) {
			w.refused[req.Service]++
			time.Sleep(20 * time.Millisecond) // as a client backs off from a service that is down
			return Answer{Status: refused, Took: time.Since(start), Err: err}
		}
		w.failures[req.Service]++
		return Answer{Took: time.Since(start), Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := Answer{Status: resp.StatusCode, Header: resp.Header, Body: body, Took: time.Since(start), Err: err}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.answers[req.Service] == nil {
		w.answers[req.Service] = map[int]int{}
	}
	w.answers[req.Service][a.Status]++
	switch {
	case a.Status == http.StatusServiceUnavailable && a.Header.Get("Retry-After") == "":
		w.bad = append(w.bad, fmt.Sprintf("%s %s: 503 without Retry-After", req.Method, url))
	case a.Status >= 500 && a.Status != http.StatusServiceUnavailable:
		w.bad = append(w.bad, fmt.Sprintf("%s %s: %d %.300s", req.Method, url, a.Status, body))
	case a.Status >= 400 && leaks(body):
		w.bad = append(w.bad, fmt.Sprintf("%s %s: %d leaks internals: %.300s", req.Method, url, a.Status, body))
	}
	return a
}

// CloseIdleConnections closes the workload's idle connections. A connection the client opened for
// a burst but never sent a request on holds a server's graceful stop for 5 s (net/http counts a
// new connection as idle only after that): close them before stopping a service on purpose.
func (w *Workload) CloseIdleConnections() { w.client.CloseIdleConnections() }
