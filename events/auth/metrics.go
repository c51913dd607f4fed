package auth

import (
	"net/http"

	"github.com/authmesh/events/internal/promreg"
	"github.com/authmesh/events/web"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the authenticator's instruments. They always exist; they are registered only with
// WithMetrics.
type metrics struct {
	cacheHits, cacheMisses prometheus.Counter
	// decisions are auth_decisions_total by outcome, resolved once: one is counted on every
	// request that Require sees, and every outcome is exposed from the start (at 0), so that a
	// rate over it is 0 rather than absent before the first refusal.
	decisions map[string]prometheus.Counter
}

// Outcomes of Require, the label of auth_decisions_total.
const (
	outcomeAllowed      = "allowed"      // let through
	outcomeUnauthorized = "unauthorized" // 401: no token, an invalid or expired one, an unknown user
	outcomeForbidden    = "forbidden"    // 403: the user is disabled
	outcomeLagging      = "lagging"      // 503 replica_lagging: the user is not current here yet
	outcomeUnavailable  = "unavailable"  // 503 unavailable: the user could not be looked up
)

func newMetrics(reg prometheus.Registerer) *metrics {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "auth_token_cache_lookups_total",
		Help: "Lookups of a bearer token in the cache of verified tokens, by result (hit, miss: verified afresh).",
	}, []string{"result"})
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "auth_decisions_total",
		Help: "Requests to authenticated routes by the authenticator's decision (allowed, unauthorized: 401, forbidden: 403 user disabled, lagging: 503 replica_lagging, unavailable: 503 lookup failed).",
	}, []string{"outcome"})
	if reg != nil {
		lookups = promreg.Register(reg, lookups)
		decisions = promreg.Register(reg, decisions)
	}
	m := &metrics{
		cacheHits:   lookups.WithLabelValues("hit"),
		cacheMisses: lookups.WithLabelValues("miss"),
		decisions:   map[string]prometheus.Counter{},
	}
	for _, o := range []string{outcomeAllowed, outcomeUnauthorized, outcomeForbidden, outcomeLagging, outcomeUnavailable} {
		m.decisions[o] = decisions.WithLabelValues(o)
	}
	return m
}

// decided counts the decision that p (nil: let through) stands for.
func (m *metrics) decided(p *web.Problem) {
	m.decisions[outcome(p)].Inc()
}

// outcome names the decision of a problem that authenticate returned (nil: allowed).
func outcome(p *web.Problem) string {
	switch {
	case p == nil:
		return outcomeAllowed
	case p.Status == http.StatusUnauthorized:
		return outcomeUnauthorized
	case p.Status == http.StatusForbidden:
		return outcomeForbidden
	case p.Code == web.CodeReplicaLagging:
		return outcomeLagging
	default:
		return outcomeUnavailable
	}
}
