package replica_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/benchfig"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/events/replica"
)

// history is a stream of users changes published for the benchmark: every user created, then
// changed in turns (roles, then status, alternately), round after round, as changes spread over
// time arrive: changes is the number of events per user.
type history struct{ users, changes int }

func (h history) events() int { return h.users * h.changes }

// subjects is the number of subjects h uses: created, role_changed and status_changed per user.
func (h history) subjects() int { return h.users * min(h.changes, 3) }

func (h history) String() string {
	return fmt.Sprintf("%s users × %d changes", count(h.users), h.changes)
}

// rebuildScale is how big BenchmarkReportRebuild runs.
type rebuildScale struct {
	main history // the history of the figures and of the plot over time
	// growth are the histories of the plot of rebuild time against history length; it holds
	// main and main's users with 3 changes (as many subjects as main, less history).
	growth     []history
	runs       int // repetitions of each measure on main
	growthRuns int // repetitions of each rebuild on the other histories
}

func newRebuildScale() rebuildScale {
	if benchfig.Full() {
		return rebuildScale{
			main: history{100_000, 10},
			growth: []history{
				{10_000, 1}, {10_000, 3}, {10_000, 10},
				{100_000, 1}, {100_000, 3}, {100_000, 10},
			},
			runs:       5,
			growthRuns: 3,
		}
	}
	return rebuildScale{
		main:       history{500, 4},
		growth:     []history{{100, 1}, {100, 4}, {500, 1}, {500, 3}, {500, 4}},
		runs:       1,
		growthRuns: 1,
	}
}

// BenchmarkReportRebuild measures rebuilds of the replica from the USERS stream both ways, reading
// every message (the whole history) and reading the last message of each subject, beside the
// limits of their parts measured in the same run on the same data: an ordered-consumer read of the
// whole stream that does nothing but decode (the NATS limit), and a COPY-merge of the final rows
// into a copy of replica_users (the Postgres limit). It saves section 3-rebuild (events/benchfig);
// it runs once whatever b.N.
//
//	BENCH_SCALE=full BENCH_OUT=tmp/bench go test ./events/replica -run '^$' -bench ReportRebuild -benchtime 1x -timeout 20m
func BenchmarkReportRebuild(b *testing.B) {
	sc := newRebuildScale()
	pool := pgtest.NewPool(b)
	if err := replica.Migrate(context.Background(), pool); err != nil {
		b.Fatal(err)
	}
	r := &rebuildReport{b: b, pool: pool, sc: sc, times: map[string]map[history][]float64{}}
	for _, h := range sc.growth {
		r.measure(h)
	}
	if err := benchfig.Save(r.section()); err != nil {
		b.Fatal(err)
	}
}

// The ways of rebuilding, as the figures and plots name them.
const (
	wayFull = "every message"
	wayLast = "last per subject"
)

// rebuildReport gathers the measures of BenchmarkReportRebuild.
type rebuildReport struct {
	b    *testing.B
	pool *pgxpool.Pool
	sc   rebuildScale
	// times are the rebuild times in seconds, by way and history.
	times map[string]map[history][]float64
	// Of main: the limits' times, the full rebuild's times after its read, and the last run of
	// each way.
	readTimes, copyTimes, tailTimes []float64
	last                            map[string]progressRun
}

// progressRun is the progress of a rebuild, and how long it took in all.
type progressRun struct {
	samples []sample
	elapsed time.Duration
}

// sample is a rebuild's progress at a time since its start.
type sample struct {
	at   time.Duration
	done uint64
}

// measure publishes h to a server of its own and times rebuilds of it, and for main the limits.
func (r *rebuildReport) measure(h history) {
	b := r.b
	ctx := context.Background()
	srv := natstest.New(b)
	defer srv.Stop()
	start := time.Now()
	final := publishHistory(b, srv, h)
	b.Logf("%s: published %d events in %s", h, h.events(), time.Since(start).Round(time.Millisecond))
	js := srv.JetStream(b, natstest.Blog) // the operator command runs as the service
	// The previous history's rows would be merged as changes made during the rebuild.
	if _, err := r.pool.Exec(ctx, `TRUNCATE replica_users`); err != nil {
		b.Fatal(err)
	}

	runs := r.sc.growthRuns
	if h == r.sc.main {
		runs = r.sc.runs
		r.last = map[string]progressRun{}
	}
	// The measures of a run follow each other, so that a disturbance of the machine spreads
	// over all of them rather than one.
	for range runs {
		if h == r.sc.main {
			r.readTimes = append(r.readTimes, readWhole(b, js, h.events()).Seconds())
		}
		for _, way := range []string{wayFull, wayLast} {
			res, samples := rebuild(b, r.pool, js, way == wayLast)
			want := uint64(h.events())
			if way == wayLast {
				want = uint64(h.subjects())
			}
			if res.Read != want || res.Applied != want {
				b.Fatalf("%s, %s: read %d and applied %d messages, want %d", h, way, res.Read, res.Applied, want)
			}
			r.addTime(way, h, res.Elapsed)
			if h == r.sc.main {
				r.last[way] = progressRun{samples, res.Elapsed}
				if way == wayFull {
					r.tailTimes = append(r.tailTimes, (res.Elapsed - samples[len(samples)-1].at).Seconds())
				}
			}
			b.Logf("%s, %s: %s, %s messages/s", h, way, res.Elapsed.Round(time.Millisecond), count(int(float64(res.Read)/res.Elapsed.Seconds())))
		}
		if h == r.sc.main {
			r.copyTimes = append(r.copyTimes, copyMerge(b, r.pool, final).Seconds())
		}
	}
}

func (r *rebuildReport) addTime(way string, h history, d time.Duration) {
	if r.times[way] == nil {
		r.times[way] = map[history][]float64{}
	}
	r.times[way][h] = append(r.times[way][h], d.Seconds())
}

// section turns the measures into the section 3-rebuild.
func (r *rebuildReport) section() benchfig.Section {
	main := r.sc.main
	n := float64(main.events())
	perSecond := func(s []float64, amount float64) []float64 {
		out := make([]float64, len(s))
		for i, v := range s {
			out[i] = amount / v
		}
		return out
	}
	on := fmt.Sprintf("%s (%s events)", main, count(main.events()))
	nameRead := "limit: ordered-consumer read of the whole stream, decode only, " + on
	nameCopy := fmt.Sprintf("limit: COPY-merge of the %s final rows into a copy of replica_users, as events of the history per second, %s", count(main.users), on)
	read := benchfig.Of(nameRead, "events/s", perSecond(r.readTimes, n)...)
	read.Note = "An ordered consumer with the rebuild's read-ahead; json.Unmarshal of every message, nothing else."
	copied := benchfig.Of(nameCopy, "events/s", perSecond(r.copyTimes, n)...)
	copied.Note = fmt.Sprintf("COPY of the final rows into a temporary table, then one INSERT … ON CONFLICT with the version gate into an empty unlogged copy: the Postgres work a full rebuild cannot avoid. Median %.2f s.", benchfig.Of("", "", r.copyTimes...).Median)
	slower := read
	if copied.Median < read.Median {
		slower = copied
	}
	full := benchfig.Of("full-history rebuild (every message), "+on, "events/s", perSecond(r.times[wayFull][main], n)...)
	full = full.Against(slower.Name, "≥ 0.6 × the slower limit", full.Median >= 0.6*slower.Median)
	full.Note = "Read with an ordered consumer, decoded on every core, applied in memory (the newest state per user), the final rows COPYed into the copy, logged and swapped in."

	// The same users and subjects with less history: the last-per-subject read should not notice.
	less := history{main.users, 3}
	fullLess := benchfig.Of("full-history rebuild, time, "+less.String(), "s", r.times[wayFull][less]...)
	lastLess := benchfig.Of("last-per-subject rebuild, time, "+less.String(), "s", r.times[wayLast][less]...)
	fullTime := benchfig.Of("full-history rebuild, time, "+main.String(), "s", r.times[wayFull][main]...)
	fullTime.Baseline = fullLess.Name
	tail := benchfig.Of("full-history rebuild, time after the last message read (write the rows, SET LOGGED, swap), "+main.String(), "s", r.tailTimes...)
	lastTime := benchfig.Of(fmt.Sprintf("last-per-subject rebuild, time, %s (%s subjects)", main, count(main.subjects())), "s", r.times[wayLast][main]...)
	lastTime = lastTime.Against(lastLess.Name, fmt.Sprintf("≤ 1.25 × (the same subjects, %.1f× less history)", float64(main.changes)/float64(less.changes)), lastTime.Median <= 1.25*lastLess.Median)
	lastRate := benchfig.Of("last-per-subject rebuild, users/s, "+main.String(), "users/s", perSecond(r.times[wayLast][main], float64(main.users))...)
	var shares []float64
	for i, t := range r.times[wayLast][main] {
		shares = append(shares, t/r.times[wayFull][main][i])
	}
	share := benchfig.Of("last-per-subject rebuild time ÷ full-history rebuild time, "+main.String(), "×", shares...)

	figures := []benchfig.Figure{full, read, copied, fullTime, tail, lastTime, lastRate, share, fullLess, lastLess}
	return benchfig.Section{
		ID:      "3-rebuild",
		Title:   "Rebuild of a replica from the stream",
		Command: "BENCH_SCALE=full BENCH_OUT=tmp/bench go test ./events/replica -run '^$' -bench ReportRebuild -benchtime 1x -timeout 20m",
		Figures: figures,
		Plots:   []benchfig.Plot{r.ratePlot(), r.historyPlot()},
		Notes: []string{
			fmt.Sprintf("Each figure is the median of %d runs on %s, min and max beside it (the other histories: %d runs); the runs interleave the limits and both ways. NATS is embedded in the benchmark's process and Postgres runs on the same machine: the 2 cores are shared by all of them.", r.sc.runs, main, r.sc.growthRuns),
			fmt.Sprintf("What bounds the full-history rebuild: reading and decoding the stream. It reads for %.0f%% of its time, then writes %s rows, logs the copy and swaps it in in %.2f s. A CPU profile (pprof) of rebuilds of 400,000 events on this machine puts JSON decoding (json.Unmarshal in every worker) and the garbage collection of what decoding and the NATS client allocate at about half of the process's CPU, the NATS server and client delivering the messages at most of the rest: the rebuild does the read limit's work on every core and adds one row per user, not one per event, for Postgres.", 100*(1-benchfig.Of("", "", r.tailTimes...).Median/fullTime.Median), count(main.users), tail.Median),
			"The last-per-subject rebuild (replica rebuild --last-per-subject) reads one message per subject, at most three per user here (created, role_changed, status_changed): its cost follows the users, not the length of their history. docs/operations.md says when an operator needs the full read instead.",
		},
	}
}

// ratePlot is the plot of messages read per second during the last run of each way on main.
func (r *rebuildReport) ratePlot() benchfig.Plot {
	p := benchfig.Plot{
		File:   "3-rebuild-rate.svg",
		Title:  fmt.Sprintf("Messages read per second during a rebuild, %s", r.sc.main),
		Kind:   benchfig.KindLine,
		XLabel: "seconds since the start",
		YLabel: "messages/s",
	}
	for _, way := range []string{wayFull, wayLast} {
		s := benchfig.Series{Name: way}
		s.X, s.Y = rateOverTime(r.last[way])
		p.Series = append(p.Series, s)
	}
	return p
}

// historyPlot is the plot of rebuild time against the number of changes per user.
func (r *rebuildReport) historyPlot() benchfig.Plot {
	p := benchfig.Plot{
		File:   "3-rebuild-history.svg",
		Title:  "Rebuild time as the history grows",
		Kind:   benchfig.KindLine,
		XLabel: "changes per user (events in the stream ÷ users)",
		YLabel: "seconds (median)",
		LogX:   true,
	}
	var users []int
	for _, h := range r.sc.growth {
		if !slices.Contains(users, h.users) {
			users = append(users, h.users)
		}
	}
	for _, way := range []string{wayFull, wayLast} {
		for _, u := range users {
			s := benchfig.Series{Name: fmt.Sprintf("%s, %s users", way, count(u))}
			for _, h := range r.sc.growth {
				if h.users == u {
					s.X = append(s.X, float64(h.changes))
					s.Y = append(s.Y, benchfig.Of("", "s", r.times[way][h]...).Median)
				}
			}
			p.Series = append(p.Series, s)
		}
	}
	return p
}

// rateOverTime turns the progress of run into messages per second over steps of a quarter
// second, up to its end (the write and swap after the read show as a fall to 0).
func rateOverTime(run progressRun) (x, y []float64) {
	const step = 250 * time.Millisecond
	var prev uint64
	i := 0
	for end := step; end < run.elapsed+step; end += step {
		done := prev
		for i < len(run.samples) && run.samples[i].at <= end {
			done = run.samples[i].done
			i++
		}
		x = append(x, end.Seconds())
		y = append(y, float64(done-prev)/step.Seconds())
		prev = done
	}
	return x, y
}

// publishHistory publishes h on a new USERS stream of srv, as account's relay does (the event id
// as Nats-Msg-Id), and returns the final state of every user with its sequence.
func publishHistory(b *testing.B, srv *natstest.Server, h history) []finalRow {
	b.Helper()
	ctx := context.Background()
	pub := srv.JetStream(b, natstest.Account, jetstream.WithPublishAsyncMaxPending(4096))
	if _, err := bus.EnsureStream(ctx, pub); err != nil {
		b.Fatal(err)
	}
	users := make([]events.User, h.users)
	for i := range users {
		users[i] = authtest.NewUser()
	}
	published := 0
	for v := 1; v <= h.changes; v++ {
		for i := range users {
			u := &users[i]
			typ := events.UserCreated
			switch {
			case v == 1:
			case v%2 == 0:
				typ = events.UserRoleChanged
				if u.HasRole(events.RoleModerator) {
					u.Roles = []string{events.RoleUser}
				} else {
					u.Roles = []string{events.RoleUser, events.RoleModerator}
				}
			default:
				typ = events.UserStatusChanged
				u.Status = map[string]string{events.StatusActive: events.StatusDisabled, events.StatusDisabled: events.StatusActive}[u.Status]
			}
			u.Version = int64(v)
			e, err := events.NewEvent(typ, *u, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			data, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := pub.PublishAsync(e.Subject(), data, jetstream.WithMsgID(e.ID.String())); err != nil {
				b.Fatal(err)
			}
			if published++; published%2048 == 0 {
				waitPublished(b, pub) // bounded pending acks: no stall
			}
		}
	}
	waitPublished(b, pub)
	final := make([]finalRow, len(users))
	for i, u := range users {
		// One connection publishes in order: the last round holds the last sequences.
		final[i] = finalRow{seq: int64((h.changes-1)*h.users + i + 1), user: u}
	}
	return final
}

// finalRow is a user's final state and the sequence of the event that carries it.
type finalRow struct {
	seq  int64
	user events.User
}

func waitPublished(b *testing.B, js jetstream.JetStream) {
	b.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish did not complete")
	}
}

// rebuild runs a full rebuild, by the last message of each subject or not, and returns its result
// and its progress.
func rebuild(b *testing.B, pool *pgxpool.Pool, js jetstream.JetStream, lastPerSubject bool) (replica.RebuildResult, []sample) {
	b.Helper()
	var samples []sample
	start := time.Now()
	res, err := replica.Rebuild(context.Background(), pool, js, replica.RebuildOptions{
		LastPerSubject: lastPerSubject,
		Progress:       func(p replica.Progress) { samples = append(samples, sample{time.Since(start), p.Done}) },
	})
	if err != nil {
		b.Fatal(err)
	}
	return res, samples
}

// readWhole reads the n messages of the stream with an ordered consumer and decodes each, and
// returns how long it took: the limit of a read of the stream.
func readWhole(b *testing.B, js jetstream.JetStream, n int) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.StreamSubjects}})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(replica.ReadAhead))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	// Bounded without a timer per message: the end of ctx stops the iterator.
	defer context.AfterFunc(ctx, it.Stop)()
	for range n {
		msg, err := it.Next()
		if err != nil {
			b.Fatalf("read stream: %v", err)
		}
		var e events.Event
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// copyMerge COPYs rows into a temporary table and merges them with the version gate into an empty
// unlogged copy of replica_users, as a rebuild writes its rows, and returns how long it took: the
// limit of the writes of a full rebuild.
func copyMerge(b *testing.B, pool *pgxpool.Pool, rows []finalRow) time.Duration {
	b.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	const setup = `DROP TABLE IF EXISTS bench_copy;
		CREATE UNLOGGED TABLE bench_copy (LIKE replica_users INCLUDING ALL);
		CREATE TEMP TABLE IF NOT EXISTS bench_rows (
			seq bigint, id uuid, email text, display_name text, roles text[], status text, version bigint
		) ON COMMIT DELETE ROWS`
	const merge = `INSERT INTO bench_copy AS u (id, email, display_name, roles, status, version, stream_seq, updated_at)
		SELECT id, email, display_name, roles, status, version, seq, now() FROM bench_rows
		` + replica.NewerVersionWins
	if _, err := conn.Exec(ctx, setup); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if _, err := conn.Exec(ctx, `DROP TABLE bench_copy`); err != nil {
			b.Error(err)
		}
	}()
	cols := []string{"seq", "id", "email", "display_name", "roles", "status", "version"}
	src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		u := rows[i].user
		return []any{rows[i].seq, pgtype.UUID{Bytes: u.ID, Valid: true}, u.Email, u.DisplayName, u.Roles, u.Status, u.Version}, nil
	})
	start := time.Now()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"bench_rows"}, cols, src); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, merge)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// count writes n with thousands separators, as the figures' names do.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
