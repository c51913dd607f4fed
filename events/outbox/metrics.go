package outbox

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's instruments. They always exist; they are registered only when
// RelayConfig.Metrics is set.
type metrics struct {
	published, errors  prometheus.Counter
	pending, oldestAge prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_published_total", Help: "Outbox events published to the stream.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_publish_errors_total", Help: "Failed publishes of outbox events (retried).",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_pending_events", Help: "Outbox events not yet published.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_oldest_pending_age_seconds", Help: "Age of the oldest unpublished outbox event; 0 when none.",
		}),
	}
	if reg == nil {
		return m
	}
	m.published = register(reg, m.published)
	m.errors = register(reg, m.errors)
	m.pending = register(reg, m.pending)
	m.oldestAge = register(reg, m.oldestAge)
	return m
}

// register registers c on reg, or returns the collector already registered under its name, so
// that several relays (as in tests) can share a registry.
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
