// Package rig is the test rig of the reliability suite (e2e/reliability): the system as
// processes (stack) on private nats-server processes (broker), one or three of them, the clients
// that load it while a check injects its fault (Workload), and the judgement that ends every
// check: quiesce, read the whole stream back and every store, and compute the figures with
// e2e/reliability/checker.
//
// A replica's row changes are observed by a trigger the rig adds to its replica_users table
// (Audit): every committed insert or update of a row is logged with its user, version and time,
// whichever instance made it and even if that instance was killed a moment later. That log gives
// applied-twice and the lag from account's change to each replica.
package rig

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/reliability/broker"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/e2e/reliability/report"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Password is the password of every user a workload registers.
const Password = apitest.Password

// The bootstrap admin of every system of the rig.
const (
	AdminEmail    = "admin@example.com"
	AdminPassword = "admin-password-reliability"
)

// Replicas are the services that keep a replica of account's users.
var Replicas = []string{"blog", "shop"}

// Build builds the services and nats-server into dir, once per test binary (TestMain).
func Build(ctx context.Context, dir string) error {
	if err := stack.Build(ctx, dir); err != nil {
		return err
	}
	_, err := broker.Build(ctx, dir)
	return err
}

// Options configure New.
type Options struct {
	// BinDir holds what Build built.
	BinDir string
	// Nodes is the number of NATS servers: 1 (the default) or 3, clustered, with the stream and
	// the key bucket created at three replicas before the services start.
	Nodes int
	// DuplicateWindow, when set, is the stream's duplicate window (the stream is then created
	// before the services, which leave it as it is).
	DuplicateWindow time.Duration
	// PostgresURL is the server of the services' databases (default: the test server).
	PostgresURL string
	// Env is added to every service's environment.
	Env []string
	// Stopped leaves the services stopped.
	Stopped bool
}

// System is the system a check runs against.
type System struct {
	*stack.Stack
	Broker *broker.Broker
	// Admin is a token of the bootstrap admin (valid for TOKEN_TTL, 15 minutes).
	Admin string

	t       testing.TB
	pools   map[string]*pgxpool.Pool
	initial map[uuid.UUID]int64
	nc      *nats.Conn
}

// New starts a system for one test and stops it when the test ends.
func New(t testing.TB, opts Options) *System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	b, err := broker.Start(ctx, filepath.Join(opts.BinDir, "nats-server"), t.TempDir(), opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			for _, nd := range b.Nodes {
				t.Logf("--- NATS %s log (tail)\n%s", nd.Name, stack.Tail(nd.Log(), 15))
			}
		}
	})
	s := &System{Broker: b, t: t, pools: map[string]*pgxpool.Pool{}}
	if opts.Nodes > 1 || opts.DuplicateWindow > 0 {
		if err := s.createStream(ctx, opts.Nodes, opts.DuplicateWindow); err != nil {
			t.Fatal(err)
		}
	}
	s.Stack = stack.ForTest(t, stack.Options{
		BinDir: opts.BinDir, AdminEmail: AdminEmail, AdminPassword: AdminPassword, LogLevel: "info",
		Broker: b, PostgresURL: opts.PostgresURL, Env: opts.Env, Stopped: opts.Stopped,
	})
	t.Cleanup(s.close) // before the stack's cleanup drops the databases
	if !opts.Stopped {
		s.Ready()
	}
	return s
}

// Ready logs the admin in and adds the audit trigger to every replica: to be called once the
// services run, when New was told Stopped.
func (s *System) Ready() {
	s.t.Helper()
	s.Admin = apitest.Login(s.t, s.URL["account"], AdminEmail, AdminPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	users, err := checker.ReadStates(ctx, s.Pool("account"), checker.AccountUsers)
	if err != nil {
		s.t.Fatal(err)
	}
	s.initial = map[uuid.UUID]int64{}
	for id, st := range users {
		s.initial[id] = st.Version
	}
	for _, r := range Replicas {
		if err := s.audit(r); err != nil {
			s.t.Fatal(err)
		}
	}
}

// createStream creates the USERS stream (and, in a cluster, the key bucket) as an operator does
// before the services start: at the given number of replicas, and with the duplicate window given.
func (s *System) createStream(ctx context.Context, replicas int, window time.Duration) error {
	js, err := s.JS()
	if err != nil {
		return err
	}
	cfg := bus.StreamConfig()
	cfg.Replicas = replicas
	if window > 0 {
		cfg.Duplicates = window
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		return fmt.Errorf("create stream: %w", err)
	}
	if replicas > 1 {
		_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: events.KeysBucket, Description: "Public keys of account (JWKS).", History: 5,
			Storage: jetstream.FileStorage, Replicas: replicas,
		})
		if err != nil {
			return fmt.Errorf("create key bucket: %w", err)
		}
	}
	return nil
}

// JS is JetStream as the operator identity (ops), connected to every node, reconnecting for ever.
func (s *System) JS() (jetstream.JetStream, error) {
	if s.nc == nil {
		servers, auth, err := bus.ParseURL(s.Broker.UserURL(natstest.Ops))
		if err != nil {
			return nil, err
		}
		opts := append(auth, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Timeout(2*time.Second))
		nc, err := nats.Connect(servers, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect as ops: %w", err)
		}
		s.nc = nc
	}
	return jetstream.New(s.nc)
}

// Pool is a pool of the database of service (an instance shares its service's), closed when the
// test ends.
func (s *System) Pool(service string) *pgxpool.Pool {
	s.t.Helper()
	if p := s.pools[service]; p != nil {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := pgxpool.New(ctx, s.DatabaseURL(service))
	if err != nil {
		s.t.Fatal(err)
	}
	s.pools[service] = p
	return p
}

// ClosePool closes the pool of service's database, before the database is dropped (a restore);
// the next Pool opens a new one.
func (s *System) ClosePool(service string) {
	if p := s.pools[service]; p != nil {
		p.Close()
		delete(s.pools, service)
	}
}

func (s *System) close() {
	for _, p := range s.pools {
		p.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
}

// auditSQL adds the trigger that logs every committed change of a replica row.
const auditSQL = `
CREATE TABLE IF NOT EXISTS reliability_applied (
    user_id uuid NOT NULL,
    version bigint NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION reliability_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reliability_applied (user_id, version) VALUES (NEW.id, NEW.version);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS reliability_applied ON replica_users;
CREATE TRIGGER reliability_applied AFTER INSERT OR UPDATE ON replica_users
    FOR EACH ROW EXECUTE FUNCTION reliability_applied();`

func (s *System) audit(service string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Pool(service).Exec(ctx, auditSQL); err != nil {
		return fmt.Errorf("audit trigger on %s: %w", service, err)
	}
	return nil
}

// Settle waits until both replicas hold exactly account's users (roles, status, version), at most
// timeout, and returns how long after since that was (the convergence time, when since is the end
// of the fault).
func (s *System) Settle(since time.Time, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		diff, err := s.divergence(ctx)
		if err == nil && diff == "" {
			return time.Since(since), nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = diff
		}
		select {
		case <-ctx.Done():
			return time.Since(since), fmt.Errorf("replicas not equal to account within %s: %s", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// divergence describes the first difference between account and a replica, or returns "".
func (s *System) divergence(ctx context.Context) (string, error) {
	acc, err := checker.ReadStates(ctx, s.Pool("account"), checker.AccountUsers)
	if err != nil {
		return "", err
	}
	for _, r := range Replicas {
		rep, err := checker.ReadStates(ctx, s.Pool(r), checker.ReplicaUsers)
		if err != nil {
			return "", err
		}
		if len(rep) != len(acc) {
			return fmt.Sprintf("%s holds %d users, account %d", r, len(rep), len(acc)), nil
		}
		for id, want := range acc {
			if got, ok := rep[id]; !ok || !checker.Equal(got, want) {
				return fmt.Sprintf("%s: user %s is %v, account has %v", r, id, got, want), nil
			}
		}
	}
	return "", nil
}

// Verdict is what Judge found.
type Verdict struct {
	checker.Figures
	Convergence time.Duration
	// Undecodable counts stream messages that are no event (a check's poison).
	Undecodable int
	// Lag is, per replica, the time from account's change (the event's occurred_at) to the first
	// commit of it in the replica, over every change of the stream.
	Lag map[string]Quantiles
	// Bad are the answers no client may get (5xx other than 503 with Retry-After, leaks).
	Bad []string
}

// Quantiles of a set of durations.
type Quantiles struct{ P50, P99, Max time.Duration }

func (q Quantiles) String() string {
	return fmt.Sprintf("%s / %s / %s", q.P50.Round(100*time.Microsecond), q.P99.Round(100*time.Microsecond), q.Max.Round(100*time.Microsecond))
}

// Judge ends a check: it waits for the system to settle (at most settle), reads the stream from
// sequence 1 and every store, computes the figures of the workload's history, adds them to row,
// and fails the test for every figure that must be zero and is not, and for every bad answer.
// since is the end of the fault, from which convergence is timed.
func (s *System) Judge(w *Workload, row *report.Row, since time.Time, settle time.Duration) Verdict {
	t := s.t
	t.Helper()
	var v Verdict
	var err error
	v.Convergence, err = s.Settle(since, settle)
	if err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := checker.History{Initial: s.initial, Attempts: w.Attempts(), Replicas: map[string]map[uuid.UUID]checker.State{}, AppliedLog: map[string][]checker.Change{}}
	js, err := s.JS()
	if err != nil {
		t.Fatal(err)
	}
	if h.Stream, v.Undecodable, err = checker.ReadStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	if h.Account, err = checker.ReadStates(ctx, s.Pool("account"), checker.AccountUsers); err != nil {
		t.Fatal(err)
	}
	v.Lag = map[string]Quantiles{}
	occurred := map[checker.Change]time.Time{}
	for _, e := range h.Stream {
		c := checker.Change{User: e.User.ID, Version: e.User.Version}
		if _, ok := occurred[c]; !ok {
			occurred[c] = e.OccurredAt
		}
	}
	for _, r := range Replicas {
		if h.Replicas[r], err = checker.ReadStates(ctx, s.Pool(r), checker.ReplicaUsers); err != nil {
			t.Fatal(err)
		}
		log, lags, err := s.applied(ctx, r, occurred)
		if err != nil {
			t.Fatal(err)
		}
		h.AppliedLog[r] = log
		v.Lag[r] = quantiles(lags)
	}
	if v.Figures, err = checker.Check(h); err != nil {
		t.Fatal(err)
	}
	v.Bad = w.Bad()

	row.Add("attempts", v.Attempts)
	row.Add("acked", v.Acked)
	row.Add("unknown", v.Unknown)
	row.Add("stream", len(h.Stream))
	row.Add("lost", v.Lost)
	row.Add("lost-middle", v.LostMiddle)
	row.Add("dup-in-stream", v.DupInStream)
	row.Add("applied-twice", sum(v.AppliedTwice))
	row.Add("unexpected", v.Unexpected)
	row.Add("divergence", sum(v.Divergence))
	row.Add("convergence", v.Convergence)
	for _, r := range Replicas {
		row.Add("lag p50/p99/max "+r, v.Lag[r])
	}
	row.Add("5xx", w.Count(500, 599))
	row.Add("500", w.Count(500, 500))
	if !v.OK() {
		t.Errorf("figures that must be 0 are not: lost %d, lost-middle %d, unexpected %d, not-applied %v, applied-twice %v, divergence %v\n%s",
			v.Lost, v.LostMiddle, v.Unexpected, v.NotApplied, v.AppliedTwice, v.Divergence, joinLines(v.Problems))
	}
	if len(v.Bad) > 0 {
		t.Errorf("%d answers no client may get, e.g.:\n%s", len(v.Bad), joinLines(v.Bad[:min(len(v.Bad), 5)]))
	}
	return v
}

// applied reads a replica's audit log: every committed row change, and for each change of the
// stream, the time from its occurrence to its first commit.
func (s *System) applied(ctx context.Context, service string, occurred map[checker.Change]time.Time) ([]checker.Change, []time.Duration, error) {
	rows, err := s.Pool(service).Query(ctx, `SELECT user_id, version, at FROM reliability_applied ORDER BY at`)
	if err != nil {
		return nil, nil, fmt.Errorf("%s audit: %w", service, err)
	}
	defer rows.Close()
	var log []checker.Change
	var lags []time.Duration
	seen := map[checker.Change]bool{}
	for rows.Next() {
		var c checker.Change
		var at time.Time
		if err := rows.Scan(&c.User, &c.Version, &at); err != nil {
			return nil, nil, err
		}
		log = append(log, c)
		if o, ok := occurred[c]; ok && !seen[c] {
			seen[c] = true
			lags = append(lags, at.Sub(o))
		}
	}
	return log, lags, rows.Err()
}

func quantiles(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
	return Quantiles{P50: at(0.5), P99: at(0.99), Max: ds[len(ds)-1]}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func joinLines(ss []string) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString("  " + s + "\n")
	}
	return b.String()
}

// ErrTimeout is returned by Within when the condition did not hold in time.
var ErrTimeout = errors.New("timed out")

// Within polls cond every 20 ms until it holds or timeout passes.
func Within(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
