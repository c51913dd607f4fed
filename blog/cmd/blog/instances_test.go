package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/servicetest"
	"github.com/google/uuid"
)

// Two instances of blog on one database and one durable consumer, each answering from its own
// in-memory view: whichever applies a change, both enforce it, and neither ever goes back to the
// old state. The user's token is issued before every change, so only the replica (and the
// views in front of it) says whether the user is disabled.
func TestTwoInstancesEnforceEveryChange(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	env, ns := servicetest.Env(t, "blog")
	js := ns.JetStream(t, natstest.Account)
	if _, err := bus.EnsureStream(t.Context(), js); err != nil {
		t.Fatalf("stream: %v", err)
	}
	iss.PublishKeys(t, js)
	instances := []*servicetest.Process{servicetest.Start(t, run, env), servicetest.Start(t, run, env)}

	u := authtest.NewUser()
	authtest.PublishUser(t, js, events.UserCreated, u)
	token := iss.Token(t, u)
	// An authenticated request that changes nothing: 404 for an active user, 403 user_disabled
	// for a disabled one.
	probe := func(p *servicetest.Process) int {
		return p.Do(t, "DELETE", "/v1/posts/"+uuid.NewString(), token, "").Status
	}
	settle := func(what string, want int) {
		t.Helper()
		for i, p := range instances {
			servicetest.Eventually(t, 15*time.Second, what, func() bool { return probe(p) == want })
			for range 50 { // the view now holds the user; it must keep answering the same
				if got := probe(p); got != want {
					t.Fatalf("instance %d: %s, then status %d, want %d again", i, what, got, want)
				}
			}
		}
	}
	settle("the user is active", http.StatusNotFound)

	for v, status := range []string{events.StatusDisabled, events.StatusActive, events.StatusDisabled} {
		u.Status, u.Version = status, int64(v)+2
		authtest.PublishUser(t, js, events.UserStatusChanged, u)
		want := http.StatusNotFound
		if status == events.StatusDisabled {
			want = http.StatusForbidden
		}
		settle("the user is "+status, want)
	}
}
