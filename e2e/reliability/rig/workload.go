package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authmesh/e2e/reliability/checker"
	"github.com/google/uuid"
)

// refused is the status do returns for a request whose connection was refused: it never reached
// the service, so it certainly made no change.
const refused = -1

// requestTimeout bounds every request of a workload; a request that gets no answer within it is
// of unknown outcome.
const requestTimeout = 5 * time.Second

// Workload is the clients of a run: registrations, role and status changes by the admin, orders
// and posts by a few users. It logs every attempt that can make an event and what it was told
// (for checker.Check), and counts every answer by service and status, so that a check can
// require that nothing answered 500.
type Workload struct {
	sys    *System
	client *http.Client
	runID  string
	seq    atomic.Int64

	mu       sync.Mutex
	attempts []checker.Attempt
	users    []uuid.UUID // registered, acked: the ones changes pick from
	answers  map[string]map[int]int
	failures map[string]int // requests with no answer, by service
	refused  map[string]int // requests whose connection was refused (the service was down)
	bad      []string       // 5xx other than a 503 with Retry-After, and answers that leak internals
}

// NewWorkload returns a workload of the system's clients.
func (s *System) NewWorkload() *Workload {
	w := &Workload{
		sys: s,
		client: &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute,
		}},
		runID:    uuid.NewString()[:8],
		answers:  map[string]map[int]int{},
		failures: map[string]int{},
		refused:  map[string]int{},
	}
	// Before the services are stopped (cleanups run last first): see CloseIdleConnections.
	s.t.Cleanup(w.CloseIdleConnections)
	return w
}

// Changes makes n changes of users with workers concurrent clients (Change: a quarter
// registrations, the rest role and status changes). It returns when all n were attempted, or ctx
// ends.
func (w *Workload) Changes(ctx context.Context, n, workers int) {
	w.each(ctx, n, workers, func() { w.Change(ctx) })
}

// Background makes changes (Change) with workers clients until stop is called, and returns how
// many it attempted. Every change is answered or timed out before stop returns.
func (w *Workload) Background(ctx context.Context, workers int) (stop func() int) {
	return w.loop(ctx, workers, w.Change)
}

// BackgroundUpdates makes role and status changes (Update) with workers clients until stop is
// called, as Background does.
func (w *Workload) BackgroundUpdates(ctx context.Context, workers int) (stop func() int) {
	return w.loop(ctx, workers, w.Update)
}

// loop runs do from workers goroutines until stop is called; stop waits for them and returns how
// many times do ran.
func (w *Workload) loop(ctx context.Context, workers int, do func(context.Context)) (stop func() int) {
	var stopped atomic.Bool
	var count atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !stopped.Load() && ctx.Err() == nil {
				do(ctx)
				count.Add(1)
			}
		})
	}
	return func() int {
		stopped.Store(true)
		wg.Wait()
		return int(count.Load())
	}
}

// Change makes one change: a registration (while fewer than 10 users are known, and a quarter of
// the time after), or a role or status change of a known user (Update).
func (w *Workload) Change(ctx context.Context) {
	w.mu.Lock()
	known := len(w.users)
	w.mu.Unlock()
	if known < 10 || rand.IntN(4) == 0 {
		w.Register(ctx)
		return
	}
	w.Update(ctx)
}

// Registrations registers n users with workers concurrent clients. A registration costs account
// an argon2 hash (about 25 ms of CPU), so a check that needs many events registers a few users
// with this and then changes them (Updates).
func (w *Workload) Registrations(ctx context.Context, n, workers int) {
	w.each(ctx, n, workers, func() { w.Register(ctx) })
}

// Updates makes n role and status changes of the users registered so far (a registration while
// there are none) with workers concurrent clients: the cheap events.
func (w *Workload) Updates(ctx context.Context, n, workers int) {
	w.each(ctx, n, workers, func() { w.Update(ctx) })
}

// PacedUpdates makes n changes as Updates does, but starts at most perSecond of them a second, so
// that a run of a given size lasts a given time (and spans a check's faults).
func (w *Workload) PacedUpdates(ctx context.Context, n, workers int, perSecond float64) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer tick.Stop()
	var mu sync.Mutex
	w.each(ctx, n, workers, func() {
		mu.Lock() // one worker waits for the tick at a time; the others wait behind it
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		mu.Unlock()
		if ctx.Err() == nil {
			w.Update(ctx)
		}
	})
}

// Update makes one role or status change of a user registered so far, chosen at random, or a
// registration while there is none.
func (w *Workload) Update(ctx context.Context) {
	w.mu.Lock()
	var user uuid.UUID
	if len(w.users) > 0 {
		user = w.users[rand.IntN(len(w.users))]
	}
	w.mu.Unlock()
	if user == uuid.Nil {
		w.Register(ctx)
		return
	}
	if rand.IntN(2) == 0 {
		roles := []string{"user"}
		if rand.IntN(2) == 0 {
			roles = append(roles, "moderator")
		}
		w.SetRoles(ctx, user, roles)
		return
	}
	status := "active"
	if rand.IntN(2) == 0 {
		status = "disabled"
	}
	w.SetStatus(ctx, user, status)
}

// each runs do n times over workers concurrent clients, until all n are done or ctx ends.
func (w *Workload) each(ctx context.Context, n, workers int, do func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				do()
			}
		})
	}
	wg.Wait()
}

// Register registers a new user and returns its id when account acknowledged it.
func (w *Workload) Register(ctx context.Context) (uuid.UUID, bool) {
	_, id, ok := w.register(ctx)
	return id, ok
}

// register registers a new user and returns its email, and its id when account acknowledged it.
func (w *Workload) register(ctx context.Context) (string, uuid.UUID, bool) {
	email := fmt.Sprintf("rel-%s-%d@example.com", w.runID, w.seq.Add(1))
	a := checker.Attempt{Op: checker.OpRegister, Email: email}
	body := map[string]any{"email": email, "password": Password, "display_name": "R " + email[:strings.IndexByte(email, '@')]}
	a.Outcome, a.User, a.Version = w.send(ctx, "account", http.MethodPost, w.sys.URL["account"]+"/v1/users", "", body)
	w.log(a)
	return email, a.User, a.Outcome == checker.Acked
}

// log adds an attempt to the history; an acked registration joins the users changes pick from.
func (w *Workload) log(a checker.Attempt) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.attempts = append(w.attempts, a)
	if a.Op == checker.OpRegister && a.Outcome == checker.Acked {
		w.users = append(w.users, a.User)
	}
}

// Call sends a request that makes no event (an order, a post, a read) to service, as the holder
// of token, and returns the status (0 when there was no answer, -1 when the connection was
// refused). It is counted like the rest.
func (w *Workload) Call(ctx context.Context, service, method, path, token string, body any) int {
	status, _ := w.do(ctx, service, method, w.sys.URL[service]+path, token, body)
	return status
}

// send sends a change and tells what became of it: acked with the user and version of the answer,
// failed (4xx: certainly not made), or unknown (no answer, or a 5xx: the change may have been
// committed before the failure).
func (w *Workload) send(ctx context.Context, service, method, url, token string, body any) (checker.Outcome, uuid.UUID, int64) {
	status, answer := w.do(ctx, service, method, url, token, body)
	switch {
	case status == http.StatusOK || status == http.StatusCreated:
		var u struct {
			ID      uuid.UUID `json:"id"`
			Version int64     `json:"version"`
		}
		if json.Unmarshal(answer, &u) != nil || u.Version < 1 {
			w.mu.Lock()
			w.bad = append(w.bad, fmt.Sprintf("%s %s: %d with no user: %.200s", method, url, status, answer))
			w.mu.Unlock()
			return checker.Unknown, uuid.Nil, 0
		}
		return checker.Acked, u.ID, u.Version
	case status >= 400 && status < 500, status == refused:
		return checker.Failed, uuid.Nil, 0
	default:
		return checker.Unknown, uuid.Nil, 0
	}
}

// do sends one request and counts its answer (see exchange).
func (w *Workload) do(ctx context.Context, service, method, url, token string, body any) (int, []byte) {
	a := w.exchange(ctx, url, Request{Service: service, Method: method, Token: token, Body: body})
	return a.Status, a.Body
}

// leaks reports whether an answer shows what a client must never see: a stack, SQL, a driver's
// error.
func leaks(answer []byte) bool {
	s := strings.ToLower(string(answer))
	for _, tell := range []string{"goroutine ", "panic", "sqlstate", "pgx", "pq:", "runtime error", "nats:"} {
		if strings.Contains(s, tell) {
			return true
		}
	}
	return false
}

// Attempts returns the attempts logged so far.
func (w *Workload) Attempts() []checker.Attempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]checker.Attempt(nil), w.attempts...)
}

// Users returns the users registered (acked) so far.
func (w *Workload) Users() []uuid.UUID {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uuid.UUID(nil), w.users...)
}

// Refused returns how many requests to service found it down (connection refused).
func (w *Workload) Refused(service string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refused[service]
}

// Answers returns how many answers service gave, by status, and how many requests got none (a
// refused connection is not counted here: see Refused).
func (w *Workload) Answers(service string) (byStatus map[int]int, none int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	byStatus = map[int]int{}
	for k, v := range w.answers[service] {
		byStatus[k] = v
	}
	return byStatus, w.failures[service]
}

// Bad returns the answers no client may get: a 5xx other than a 503 with Retry-After, or one that
// leaks internals.
func (w *Workload) Bad() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bad...)
}

// Count returns the number of answers with a status in [lo, hi] over every service.
func (w *Workload) Count(lo, hi int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.answers {
		for s, c := range m {
			if s >= lo && s <= hi {
				n += c
			}
		}
	}
	return n
}
