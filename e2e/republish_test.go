package e2e

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamEvents returns the subject of every message in the USERS stream by its Nats-Msg-Id (the
// event id), read one sequence at a time.
func streamEvents(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]string {
	t.Helper()
	str, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", events.StreamName, err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	got := map[string]string{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := str.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream message %d: %v", seq, err)
		}
		id := msg.Header.Get(nats.MsgIdHdr)
		if id == "" {
			t.Fatalf("stream message %d (%s) has no %s header", seq, msg.Subject, nats.MsgIdHdr)
		}
		if _, dup := got[id]; dup {
			t.Errorf("event %s is in the stream twice (again at sequence %d)", id, seq)
		}
		got[id] = msg.Subject
	}
	return got
}

// TestStreamRestoredFromOutbox plays the loss of the whole USERS stream (issue 3): the stream is
// deleted and recreated empty, `account outbox republish` publishes the kept events again, and
// then the stream holds every event it held before, blog's and shop's replicas verify against it
// (also after a full rebuild from it), and new changes flow again.
func TestStreamRestoredFromOutbox(t *testing.T) {
	s := newStack(t)
	account := s.URL["account"]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Some history: registrations, a role change, a disabled user.
	admin := login(t, s, adminEmail, adminPassword)
	emails := []string{"ann@example.com", "ben@example.com", "cat@example.com"}
	ids, tokens := map[string]string{}, map[string]string{}
	for _, e := range emails {
		ids[e], tokens[e] = register(t, s, e, strings.Split(e, "@")[0])
	}
	apitest.Call(t, "PUT", account+"/v1/users/"+ids["ben@example.com"]+"/roles", admin, map[string]any{"roles": []string{"user", "moderator"}}).
		Want(t, http.StatusOK, "grant moderator")
	apitest.Call(t, "PUT", account+"/v1/users/"+ids["cat@example.com"]+"/status", admin, map[string]any{"status": "disabled"}).
		Want(t, http.StatusOK, "disable cat")
	caughtUp(t, s, "ben@example.com")
	// cat's token, issued before she was disabled, is refused by blog and shop.
	catRefused := func(when string) {
		t.Helper()
		cat := tokens["cat@example.com"]
		apitest.Eventually(t, http.StatusForbidden, "blog refuses disabled cat "+when, func() apitest.Response {
			return apitest.Call(t, "PATCH", s.URL["blog"]+"/v1/posts/"+uuid.NewString(), cat, map[string]any{"title": "x"})
		}).WantProblem(t, http.StatusForbidden, "user_disabled", "blog refuses disabled cat "+when)
		apitest.Eventually(t, http.StatusForbidden, "shop refuses disabled cat "+when, func() apitest.Response {
			return apitest.Call(t, "GET", s.URL["shop"]+"/v1/orders", cat, nil)
		}).WantProblem(t, http.StatusForbidden, "user_disabled", "shop refuses disabled cat "+when)
	}
	catRefused("before the loss")

	nc, err := nats.Connect(s.NATS.UserURL(natstest.Ops), nats.Timeout(5*time.Second)) // an operator
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	before := streamEvents(t, ctx, js)
	// The bootstrap admin and three users created, one role and one status change.
	if n := len(before); n < 6 {
		t.Fatalf("stream holds %d events before the loss, want at least 6", n)
	}

	// The loss: the stream is gone, and comes back empty (account's relay recreates it when it
	// next publishes; the operator does here).
	// NATS deletes a stream's store in the background: a stream created again in the same
	// moment may take over the old store, messages and duplicate-detection state included, and
	// would then take every republished event for a duplicate. Delete until a fresh one stands.
	for attempt := 1; ; attempt++ {
		if err := js.DeleteStream(ctx, events.StreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("delete stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		str, err := bus.EnsureStream(ctx, js)
		if err != nil {
			t.Fatalf("recreate stream: %v", err)
		}
		info, err := str.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		if info.State.LastSeq == 0 {
			break
		}
		if attempt == 10 {
			t.Fatalf("the recreated stream still has the old store after %d deletions: %+v", attempt, info.State)
		}
		t.Logf("the recreated stream took over the deleted one's store (%+v); deleting it again", info.State)
	}
	if n := len(streamEvents(t, ctx, js)); n != 0 {
		t.Fatalf("recreated stream holds %d events, want 0", n)
	}

	out, code := command(t, s, "account", "outbox", "republish")
	if code != 0 {
		t.Fatalf("account outbox republish: exit %d\n%s", code, out)
	}
	t.Logf("account outbox republish:\n%s", out)
	if !strings.Contains(out, "duplicates, not stored again): 0") {
		t.Errorf("account outbox republish into an empty stream reported duplicates:\n%s", out)
	}
	after := streamEvents(t, ctx, js)
	for id, subj := range before {
		if after[id] != subj {
			t.Errorf("event %s (%s) is not in the restored stream", id, subj)
		}
	}
	if len(after) != len(before) {
		t.Errorf("restored stream holds %d events, want the %d it held before: %v", len(after), len(before), sortedKeys(after))
	}
	if t.Failed() {
		str, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatalf("stream after the republish: %v", err)
		}
		info, err := str.Info(ctx)
		if err != nil {
			t.Fatalf("stream info after the republish: %v", err)
		}
		t.Fatalf("stream after the republish: created %v, state %+v", info.Created, info.State)
	}

	for _, svc := range []string{"blog", "shop"} {
		if out, code := verify(t, s, svc); code != 0 {
			t.Errorf("%s replica verify after the restore: exit %d, want 0\n%s", svc, code, out)
		}
		if out, code := command(t, s, svc, "replica", "rebuild"); code != 0 {
			t.Errorf("%s replica rebuild from the restored stream: exit %d, want 0\n%s", svc, code, out)
		}
		if out, code := verify(t, s, svc); code != 0 {
			t.Errorf("%s replica verify after the rebuild: exit %d, want 0\n%s", svc, code, out)
		}
	}

	// The rebuilt replicas still hold the history: ben moderates, cat is refused.
	post := apitest.Call(t, "POST", s.URL["blog"]+"/v1/posts", login(t, s, "ann@example.com", apitest.Password),
		map[string]any{"title": "After", "body": "the restore"}).Want(t, http.StatusCreated, "ann posts after the restore")
	ben := login(t, s, "ben@example.com", apitest.Password)
	apitest.Call(t, "DELETE", s.URL["blog"]+"/v1/posts/"+post.Str("id"), ben, nil).
		Want(t, http.StatusNoContent, "ben deletes as a moderator after the rebuild")

	catRefused("after the rebuild")

	// New changes flow through the recreated stream and consumers.
	_, dan := register(t, s, "dan@example.com", "Dan")
	apitest.Eventually(t, http.StatusCreated, "a user registered after the restore posts", func() apitest.Response {
		return apitest.Call(t, "POST", s.URL["blog"]+"/v1/posts", dan, map[string]any{"title": "New", "body": "here"})
	})
	apitest.Eventually(t, http.StatusOK, "a user registered after the restore lists orders", func() apitest.Response {
		return apitest.Call(t, "GET", s.URL["shop"]+"/v1/orders", dan, nil)
	})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k+" "+m[k])
	}
	sort.Strings(keys)
	return keys
}

// verify runs `replica verify`.
func verify(t *testing.T, s *stack.Stack, svc string) (string, int) {
	t.Helper()
	return command(t, s, svc, "replica", "verify")
}
