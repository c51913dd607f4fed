package auth

import (
	"github.com/authmesh/events/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the authenticator's instruments. They always exist; they are registered only with
// WithMetrics.
type metrics struct {
	cacheHits, cacheMisses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "auth_token_cache_lookups_total",
		Help: "Lookups of a bearer token in the cache of verified tokens, by result (hit, miss: verified afresh).",
	}, []string{"result"})
	if reg != nil {
		lookups = promreg.Register(reg, lookups)
	}
	return &metrics{cacheHits: lookups.WithLabelValues("hit"), cacheMisses: lookups.WithLabelValues("miss")}
}
