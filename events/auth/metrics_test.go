package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Every request Require sees is counted once in auth_decisions_total, under the outcome its answer
// stands for; every outcome is exposed from the start.
func TestDecisionMetrics(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	keys, err := auth.NewKeySet(iss.JWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog"}
	active := authtest.NewUser()
	disabled := authtest.NewUser()
	disabled.Status = events.StatusDisabled
	known := map[uuid.UUID]events.User{active.ID: active, disabled.ID: disabled}

	tests := []struct {
		name   string
		token  string // "" sends no Authorization header
		err    error  // of Users
		status int
		want   string // the outcome counted
	}{
		{name: "allowed", token: iss.Token(t, active), status: http.StatusOK, want: "allowed"},
		{name: "no token", status: http.StatusUnauthorized, want: "unauthorized"},
		{name: "bad token", token: "abc.def.ghi", status: http.StatusUnauthorized, want: "unauthorized"},
		{name: "unknown user", token: iss.Token(t, authtest.NewUser()), status: http.StatusUnauthorized, want: "unauthorized"},
		{name: "disabled", token: iss.Token(t, disabled), status: http.StatusForbidden, want: "forbidden"},
		{name: "lagging", token: iss.Token(t, active), err: auth.ErrNotCurrent, status: http.StatusServiceUnavailable, want: "lagging"},
		{name: "lookup failing", token: iss.Token(t, active), err: errors.New("connection refused"), status: http.StatusServiceUnavailable, want: "unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			h := auth.New(v, &fakeUsers{users: known, err: tt.err}, nil, auth.WithMetrics(reg)).Require(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			want := map[string]float64{"allowed": 0, "unauthorized": 0, "forbidden": 0, "lagging": 0, "unavailable": 0}
			want[tt.want] = 1
			if diff := cmp.Diff(want, counters(t, reg, "auth_decisions_total", "outcome")); diff != "" {
				t.Errorf("auth_decisions_total by outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// counters returns the values of the counter family name in reg, by the value of label.
func counters(t *testing.T, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
