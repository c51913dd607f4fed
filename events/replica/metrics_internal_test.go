package replica

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// observeLag records event time → applied, a clock skew counting as no lag, and the newest event's
// time, which only rises (a batch may apply an older event after a newer one).
func TestObserveLag(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	now := time.Unix(1_800_000_000, 0)
	m.observeLag(now.Add(-3*time.Second), now)
	m.observeLag(now.Add(-10*time.Second), now) // older, applied later
	m.observeLag(now.Add(time.Second), now)     // account's clock ahead

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	var sum, at float64
	for _, f := range families {
		switch f.GetName() {
		case "replica_apply_lag_seconds":
			h := f.GetMetric()[0].GetHistogram()
			count, sum = h.GetSampleCount(), h.GetSampleSum()
		case "replica_last_applied_event_timestamp_seconds":
			at = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if count != 3 || sum != 13 {
		t.Errorf("replica_apply_lag_seconds count %d sum %v, want 3 and 13 (3 + 10 + 0)", count, sum)
	}
	if want := float64(now.Add(time.Second).Unix()); at != want {
		t.Errorf("replica_last_applied_event_timestamp_seconds = %v, want the newest occurred_at %v", at, want)
	}
}
