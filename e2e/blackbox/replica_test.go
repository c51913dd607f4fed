package blackbox

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// replicaStatus is `replica status --json`.
type replicaStatus struct {
	StreamLastSeq *uint64 `json:"stream_last_seq"`
	AppliedSeq    *uint64 `json:"applied_seq"`
	Lag           *uint64 `json:"lag"`
	Users         *int64  `json:"users"`
	DeadLetters   *int64  `json:"dead_letters"`
}

// TestReplicaOperations runs the replica operator commands of blog and shop against the running
// system: status (also as JSON), verify, a full rebuild and rebuilds from a sequence and from a
// time, each followed by verify, and the dead letters. The services keep authorizing from the
// rebuilt replicas. It is not parallel: verify compares the replica with the stream and is
// best read while the other tests are not writing.
func TestReplicaOperations(t *testing.T) {
	// History for the replicas: a moderator and a disabled user, applied before the commands run.
	mod, off := newUser(t, "Moderator"), newUser(t, "Off")
	setRoles(t, mod, "user", "moderator")
	caughtUp(t, mod)
	setStatus(t, off, "disabled")
	author := newUser(t, "Author")

	for _, svc := range []string{"blog", "shop"} {
		t.Run(svc, func(t *testing.T) {
			res := operate(t, svc, "replica", "status", "--json")
			if res.code != 0 {
				t.Fatalf("%s replica status --json: exit %d", svc, res.code)
			}
			var st replicaStatus
			if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
				t.Fatalf("%s replica status --json: %v: %q", svc, err, res.stdout)
			}
			if st.StreamLastSeq == nil || st.AppliedSeq == nil || st.Lag == nil || st.Users == nil || st.DeadLetters == nil {
				t.Errorf("status %s, want stream_last_seq, applied_seq, lag, users and dead_letters", res.stdout)
			} else if *st.StreamLastSeq == 0 || *st.Users < 3 || *st.AppliedSeq > *st.StreamLastSeq {
				t.Errorf("status %s: want a stream with events, at least the 3 users made here, applied <= last", res.stdout)
			}
			if res := operate(t, svc, "replica", "status"); res.code != 0 || !strings.Contains(res.stdout, "lag") {
				t.Errorf("%s replica status: exit %d, want 0 and a report with the lag", svc, res.code)
			}

			verify := func(when string) {
				t.Helper()
				if res := operate(t, svc, "replica", "verify"); res.code != 0 {
					t.Errorf("%s replica verify %s: exit %d, want 0\n%s%s", svc, when, res.code, res.stdout, res.stderr)
				}
			}
			verify("of the live replica")
			if res := operate(t, svc, "replica", "rebuild"); res.code != 0 {
				t.Fatalf("%s replica rebuild: exit %d, want 0", svc, res.code)
			}
			verify("after a full rebuild")
			if res := operate(t, svc, "replica", "rebuild", "--from-seq", "1"); res.code != 0 {
				t.Errorf("%s replica rebuild --from-seq 1: exit %d, want 0", svc, res.code)
			}
			verify("after a rebuild from sequence 1")
			since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
			if res := operate(t, svc, "replica", "rebuild", "--since", since); res.code != 0 {
				t.Errorf("%s replica rebuild --since %s: exit %d, want 0", svc, since, res.code)
			}
			verify("after a rebuild since an hour ago")
			if res := operate(t, svc, "replica", "dead-letters", "list"); res.code != 0 {
				t.Errorf("%s replica dead-letters list: exit %d, want 0", svc, res.code)
			}
			for _, bad := range [][]string{{"rebuild", "--from-seq", "0"}, {"rebuild", "--since", "yesterday"}, {"frobnicate"}} {
				if res := operate(t, svc, append([]string{"replica"}, bad...)...); res.code != 2 {
					t.Errorf("%s replica %s: exit %d, want 2 (usage)", svc, strings.Join(bad, " "), res.code)
				}
			}
		})
	}

	// The rebuilt replicas authorize as the live ones did, with tokens issued before.
	p := apitest.Call(t, "POST", system.blog+"/v1/posts", author.Token, map[string]any{"title": "t", "body": "b"}).
		Want(t, http.StatusCreated, "a user posts after the rebuilds")
	apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+p.Str("id"), mod.Token, nil).
		Want(t, http.StatusNoContent, "the moderator deletes after the rebuilds")
	apitest.Call(t, "PATCH", system.blog+"/v1/posts/"+uuid.NewString(), off.Token, map[string]any{"title": "x"}).
		WantProblem(t, http.StatusForbidden, "user_disabled", "blog refuses the disabled user after the rebuilds")
	apitest.Call(t, "GET", system.shop+"/v1/orders", off.Token, nil).
		WantProblem(t, http.StatusForbidden, "user_disabled", "shop refuses the disabled user after the rebuilds")
	// And changes made after them still arrive.
	late := newUser(t, "Late")
	caughtUp(t, late)
}
