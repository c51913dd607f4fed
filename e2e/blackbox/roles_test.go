package blackbox

import (
	"net/http"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// TestRolePropagation: a role granted or revoked takes effect on blog and shop for a token issued
// before the change. It logs how long each change took to show: from the 200 of the PUT to the
// first answer that reflects it (no timing is asserted; the time depends on the machine).
func TestRolePropagation(t *testing.T) {
	t.Parallel()
	alice, bob := newUser(t, "Alice"), newUser(t, "Bob")
	caughtUp(t, bob)
	post := func() string {
		return apitest.Call(t, "POST", system.blog+"/v1/posts", alice.Token, map[string]any{"title": "t", "body": "b"}).
			Want(t, http.StatusCreated, "alice posts").Str("id")
	}
	target := post()
	apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+target, bob.Token, nil).
		WantProblem(t, http.StatusForbidden, "forbidden", "bob deletes as a user")

	// blog: moderator granted. Bob's first successful delete is the answer that reflects it.
	d, n := apitest.Propagation(t, "blog: moderator granted", setRolesAt(t, bob, "user", "moderator"), func() bool {
		r := apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+target, bob.Token, nil)
		if r.Status != http.StatusForbidden && r.Status != http.StatusNoContent {
			t.Fatalf("bob deletes while the grant propagates: status %d; body %s", r.Status, r.Raw)
		}
		return r.Status == http.StatusNoContent
	})
	t.Logf("blog: moderator grant in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)

	// blog: moderator revoked. Each delete that still succeeds costs a post; alice writes another.
	target = post()
	start := setRolesAt(t, bob, "user")
	d, n = apitest.Propagation(t, "blog: moderator revoked", start, func() bool {
		r := apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+target, bob.Token, nil)
		switch r.Status {
		case http.StatusForbidden:
			return true
		case http.StatusNoContent:
			target = post()
			return false
		}
		t.Fatalf("bob deletes while the revocation propagates: status %d; body %s", r.Status, r.Raw)
		return false
	})
	t.Logf("blog: moderator revocation in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)

	// shop: admin granted and revoked. An admin may list another user's orders, a user may not.
	theirs := system.shop + "/v1/orders?user_id=" + alice.ID
	probe := func(want int) func() bool {
		return func() bool {
			r := apitest.Call(t, "GET", theirs, bob.Token, nil)
			if r.Status != http.StatusOK && r.Status != http.StatusForbidden {
				t.Fatalf("bob lists alice's orders: status %d; body %s", r.Status, r.Raw)
			}
			return r.Status == want
		}
	}
	apitest.Call(t, "GET", theirs, bob.Token, nil).WantProblem(t, http.StatusForbidden, "forbidden", "bob lists alice's orders as a user")
	d, n = apitest.Propagation(t, "shop: admin granted", setRolesAt(t, bob, "user", "admin"), probe(http.StatusOK))
	t.Logf("shop: admin grant in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)
	d, n = apitest.Propagation(t, "shop: admin revoked", setRolesAt(t, bob, "user"), probe(http.StatusForbidden))
	t.Logf("shop: admin revocation in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)
}

// TestDisable: a disabled user's tokens are refused at once by account and, once the event has
// arrived, with 403 user_disabled by blog and shop; enabled again, the same token works.
func TestDisable(t *testing.T) {
	t.Parallel()
	u := newUser(t, "Dora")
	caughtUp(t, u)
	blogProbe := func() apitest.Response { // 404 while active: the post does not exist
		return apitest.Call(t, "PATCH", system.blog+"/v1/posts/"+uuid.NewString(), u.Token, map[string]any{"title": "x"})
	}
	shopProbe := func() apitest.Response { return apitest.Call(t, "GET", system.shop+"/v1/orders", u.Token, nil) }
	refused := func(service string, probe func() apitest.Response, active int) func() bool {
		return func() bool {
			r := probe()
			if r.Status == active {
				return false
			}
			r.WantProblem(t, http.StatusForbidden, "user_disabled", service+" for a disabled user")
			return true
		}
	}
	allowed := func(service string, probe func() apitest.Response, active int) func() bool {
		return func() bool {
			r := probe()
			if r.Status == http.StatusForbidden {
				return false
			}
			r.Want(t, active, service+" for a user enabled again")
			return true
		}
	}

	start := setStatusAt(t, u, "disabled")
	apitest.Call(t, "GET", system.account+"/v1/users/me", u.Token, nil).
		WantProblem(t, http.StatusForbidden, "user_disabled", "account refuses a disabled user at once")
	d, n := apitest.Propagation(t, "blog: disabled", start, refused("blog", blogProbe, http.StatusNotFound))
	t.Logf("blog: disabling in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)
	d, n = apitest.Propagation(t, "shop: disabled", start, refused("shop", shopProbe, http.StatusOK))
	t.Logf("shop: disabling in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)
	apitest.Call(t, "POST", system.blog+"/v1/posts", u.Token, map[string]any{"title": "x", "body": "y"}).
		WantProblem(t, http.StatusForbidden, "user_disabled", "a disabled user posts")
	apitest.Call(t, "POST", system.shop+"/v1/orders", u.Token, order(uuid.NewString(), 1)).
		WantProblem(t, http.StatusForbidden, "user_disabled", "a disabled user orders")

	start = setStatusAt(t, u, "active")
	d, n = apitest.Propagation(t, "blog: enabled", start, allowed("blog", blogProbe, http.StatusNotFound))
	t.Logf("blog: enabling in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)
	d, n = apitest.Propagation(t, "shop: enabled", start, allowed("shop", shopProbe, http.StatusOK))
	t.Logf("shop: enabling in effect %.1f ms after the PUT's 200 (%d requests)", ms(d), n)
}

// setRolesAt sets roles and returns when the PUT's 200 arrived.
func setRolesAt(t *testing.T, u user, roles ...string) time.Time {
	t.Helper()
	setRoles(t, u, roles...)
	return time.Now()
}

// setStatusAt sets the status and returns when the PUT's 200 arrived.
func setStatusAt(t *testing.T, u user, status string) time.Time {
	t.Helper()
	setStatus(t, u, status)
	return time.Now()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
