package replica

import (
	"github.com/authmesh/events/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the replica's instruments. They always exist; they are registered only when
// Config.Metrics is set.
type metrics struct {
	applied, skipped, deadLettered prometheus.Counter
	batchSeconds                   prometheus.Histogram
	lastSeq, pending               prometheus.Gauge
	lookups                        *prometheus.CounterVec
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
	m.lastSeq = promreg.Register(reg, m.lastSeq)
	m.pending = promreg.Register(reg, m.pending)
	m.lookups = promreg.Register(reg, m.lookups)
}
