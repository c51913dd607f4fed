package replica

import (
	"time"

	"github.com/authmesh/events/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the replica's instruments. They always exist; they are registered only when
// Config.Metrics is set.
type metrics struct {
	applied, skipped, deadLettered prometheus.Counter
	batchSeconds, lagSeconds       prometheus.Histogram
	lastSeq, pending, lastEventAt  prometheus.Gauge
	lookups                        *prometheus.CounterVec
	// lastEventAtValue is what lastEventAt was last set to, which only rises; only the consumer
	// loop touches it.
	lastEventAtValue float64
	// viewHits is lookups{result="view"}, resolved once: it is counted on every authorized request.
	viewHits prometheus.Counter
}

// Results of User, the label of replica_lookups_total.
const (
	resultView     = "view"      // answered from the in-memory view
	resultHit      = "hit"       // found at once in Postgres
	resultCaughtUp = "caught_up" // found after waiting
	resultLagging  = "lagging"
	resultStale    = "stale"
	resultCanceled = "canceled"
	resultError    = "error"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replica_events_applied_total", Help: "Events that changed the replica.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replica_events_skipped_total", Help: "Events not newer than the replica's row (duplicates, reordered, replayed).",
		}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replica_events_dead_lettered_total", Help: "Events recorded as dead letters and terminated.",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "replica_batch_apply_seconds", Help: "Time to apply and commit one batch of events.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		lagSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "replica_apply_lag_seconds", Help: "Time from an event's occurred_at (account's clock) to the commit that applied it here; events skipped or dead-lettered are not counted.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		lastEventAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "replica_last_applied_event_timestamp_seconds", Help: "occurred_at (Unix seconds) of the newest event this instance applied; 0 until it applies one.",
		}),
		lastSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "replica_last_applied_sequence", Help: "Highest stream sequence this instance committed.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "replica_pending_events", Help: "Events of the stream not yet delivered to the consumer, as of the last batch.",
		}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "replica_lookups_total", Help: "User lookups by result (view: from memory, hit: found at once in Postgres, caught_up after a wait, lagging, stale, canceled, error).",
		}, []string{"result"}),
	}
	if reg != nil {
		m.register(reg)
	}
	m.viewHits = m.lookups.WithLabelValues(resultView)
	return m
}

// register registers m's instruments with reg, taking over those already registered there.
func (m *metrics) register(reg prometheus.Registerer) {
	m.applied = promreg.Register(reg, m.applied)
	m.skipped = promreg.Register(reg, m.skipped)
	m.deadLettered = promreg.Register(reg, m.deadLettered)
	m.batchSeconds = promreg.Register(reg, m.batchSeconds)
	m.lagSeconds = promreg.Register(reg, m.lagSeconds)
	m.lastEventAt = promreg.Register(reg, m.lastEventAt)
	m.lastSeq = promreg.Register(reg, m.lastSeq)
	m.pending = promreg.Register(reg, m.pending)
	m.lookups = promreg.Register(reg, m.lookups)
}

// observeLag records an event that occurred at occurred and was applied at now. A clock of
// account's ahead of this one counts as no lag.
func (m *metrics) observeLag(occurred, now time.Time) {
	m.lagSeconds.Observe(max(now.Sub(occurred).Seconds(), 0))
	if at := float64(occurred.UnixNano()) / 1e9; at > m.lastEventAtValue {
		m.lastEventAtValue = at
		m.lastEventAt.Set(at)
	}
}
