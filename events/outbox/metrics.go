package outbox

import (
	"github.com/authmesh/events/internal/promreg"
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
			Name: "outbox_publish_errors_total", Help: "Failed publish attempts of the outbox relay (retried).",
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
	m.published = promreg.Register(reg, m.published)
	m.errors = promreg.Register(reg, m.errors)
	m.pending = promreg.Register(reg, m.pending)
	m.oldestAge = promreg.Register(reg, m.oldestAge)
	return m
}
