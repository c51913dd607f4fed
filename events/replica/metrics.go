package replica

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the replica's instruments. They always exist; they are registered only when
// Config.Metrics is set.
type metrics struct {
	applied, skipped, deadLettered prometheus.Counter
	batchSeconds                   prometheus.Histogram
	lastSeq, pending               prometheus.Gauge
	lookups                        *prometheus.CounterVec
}

// Results of User, the label of replica_lookups_total.
const (
	resultHit      = "hit"       // found at once
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
			Name: "replica_lookups_total", Help: "User lookups by result (hit, caught_up after a wait, lagging, stale, canceled, error).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	m.applied = register(reg, m.applied)
	m.skipped = register(reg, m.skipped)
	m.deadLettered = register(reg, m.deadLettered)
	m.batchSeconds = register(reg, m.batchSeconds)
	m.lastSeq = register(reg, m.lastSeq)
	m.pending = register(reg, m.pending)
	m.lookups = register(reg, m.lookups)
	return m
}

// register registers c on reg, or returns the collector already registered under its name, so
// that several replicas (as in tests) can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	return c
}
