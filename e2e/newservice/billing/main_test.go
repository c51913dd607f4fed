package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/servicetest"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// doc is the page that quotes this example, from this package's directory.
const doc = "../../../docs/new-service.md"

// The page quotes lines of main.go between markers ("// [wiring]" ... "// [/wiring]"), each in the
// code block after a comment "<!-- quote e2e/newservice/billing/main.go [wiring] -->"; it gives the
// test a NATS identity in the block after "<!-- used by e2e/newservice/billing/main_test.go
// [identity] -->".
var (
	codeMarker = regexp.MustCompile(`^\s*// \[(/?)([a-z-]+)\]\s*$`)
	docMarker  = regexp.MustCompile(`^<!-- (quote e2e/newservice/billing/main\.go|used by e2e/newservice/billing/main_test\.go) \[([a-z-]+)\] -->$`)
)

// TestDocQuotesTheExample fails when a block of docs/new-service.md that quotes main.go differs
// from the lines between its markers, or when either names a block the other lacks.
func TestDocQuotesTheExample(t *testing.T) {
	t.Parallel()
	quoted, _ := docBlocks(t)
	marked := codeBlocks(t)
	if len(marked) < 3 {
		t.Fatalf("main.go marks %d blocks, want config, wiring, handler and more", len(marked))
	}
	for name, code := range marked {
		q, ok := quoted[name]
		if !ok {
			t.Errorf("%s does not quote the block [%s] of main.go", doc, name)
			continue
		}
		if diff := cmp.Diff(code, q); diff != "" {
			t.Errorf("%s quotes [%s] otherwise than main.go (-main.go +page):\n%s", doc, name, diff)
		}
	}
	for name := range quoted {
		if _, ok := marked[name]; !ok {
			t.Errorf("%s quotes a block [%s] that main.go does not mark", doc, name)
		}
	}
}

// docBlocks returns the code blocks of the page that follow a marker: those quoted from main.go,
// and those given to this test, by name.
func docBlocks(t *testing.T) (quoted, given map[string]string) {
	t.Helper()
	raw, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	quoted, given = map[string]string{}, map[string]string{}
	lines := strings.Split(string(raw), "\n")
	for i := 0; i < len(lines); i++ {
		m := docMarker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("%s:%d: the marker is not followed by a code block", doc, i+1)
		}
		var block []string
		j := i + 2
		for ; j < len(lines) && !strings.HasPrefix(lines[j], "```"); j++ {
			block = append(block, lines[j])
		}
		if j == len(lines) {
			t.Fatalf("%s:%d: the code block does not end", doc, i+2)
		}
		into := quoted
		if strings.HasPrefix(m[1], "used by") {
			into = given
		}
		if _, dup := into[m[2]]; dup {
			t.Fatalf("%s:%d: a second block [%s]", doc, i+1, m[2])
		}
		into[m[2]] = dedent(block)
		i = j
	}
	return quoted, given
}

// codeBlocks returns the blocks of main.go between markers, by name.
func codeBlocks(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	var (
		open  string
		lines []string
	)
	for i, line := range strings.Split(string(raw), "\n") {
		m := codeMarker.FindStringSubmatch(line)
		switch {
		case m == nil:
			if open != "" {
				lines = append(lines, line)
			}
		case m[1] == "" && open == "":
			open, lines = m[2], nil
		case m[1] == "/" && m[2] == open:
			blocks[open] = dedent(lines)
			open = ""
		default:
			t.Fatalf("main.go:%d: marker %s out of place", i+1, strings.TrimSpace(line))
		}
	}
	if open != "" {
		t.Fatalf("main.go: the block [%s] does not end", open)
	}
	return blocks
}

// dedent joins lines without the blank lines around them and without the indentation they share.
func dedent(lines []string) string {
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "\t "))
		if indent < 0 || n < indent {
			indent = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if len(l) >= indent && indent > 0 {
			l = l[indent:]
		}
		out[i] = l
	}
	return strings.Join(out, "\n")
}

// TestBilling runs the example as its main does, against a NATS server whose deploy/nats/auth.conf
// has the identity the page gives, and a database of its own: an active user's request is
// answered from the replica, a disabled user's is refused, and so is a token without billing's
// audience. The service's log shows no refusal of its NATS permissions (servicetest.Start checks).
func TestBilling(t *testing.T) {
	_, given := docBlocks(t)
	identity, ok := given["identity"]
	if !ok {
		t.Fatalf("%s gives no [identity] block", doc)
	}
	url := startNATS(t, identity)

	// account's part: the stream, the public keys, the users.
	js := jetStream(t, url, natstest.Account)
	iss := authtest.NewIssuer(t)
	iss.PublishKeys(t, js)
	alice := authtest.NewUser(events.RoleModerator)
	authtest.PublishUser(t, js, events.UserCreated, alice)
	bob := authtest.NewUser()
	authtest.PublishUser(t, js, events.UserCreated, bob)
	disabled := bob
	disabled.Status, disabled.Version = events.StatusDisabled, 2
	authtest.PublishUser(t, js, events.UserStatusChanged, disabled)

	p := servicetest.Start(t, run, map[string]string{
		"DATABASE_URL": pgtest.NewDatabase(t),
		"NATS_URL":     strings.Replace(url, "nats://", "nats://billing:"+natstest.Password("billing")+"@", 1),
		"LOG_LEVEL":    "debug",
	})
	// A token as account signs it once "billing" is among auth.Audiences (the page, step 5).
	token := func(u events.User) string {
		c := iss.Claims(u)
		c.Audience = append(c.Audience, "billing")
		return iss.Sign(t, c)
	}

	res := p.Do(t, "GET", "/v1/whoami", token(alice), "", "X-Request-Id", "whoami-alice")
	if res.Status != http.StatusOK {
		t.Fatalf("GET /v1/whoami as alice = %d %s, want 200", res.Status, res.Body)
	}
	var me struct {
		ID          string   `json:"id"`
		DisplayName string   `json:"display_name"`
		Roles       []string `json:"roles"`
		Status      string   `json:"status"`
	}
	res.Decode(t, &me)
	if me.ID != alice.ID.String() || me.DisplayName != alice.DisplayName || !slices.Equal(me.Roles, alice.Roles) || me.Status != events.StatusActive {
		t.Errorf("GET /v1/whoami as alice = %s, want %+v", res.Body, alice)
	}

	// bob's token was issued before he was disabled: refused once the event has reached billing.
	var last servicetest.Response
	servicetest.Eventually(t, 10*time.Second, "bob refused", func() bool {
		last = p.Do(t, "GET", "/v1/whoami", token(bob), "")
		return last.Status == http.StatusForbidden
	})
	wantProblem(t, "GET /v1/whoami as disabled bob", last, "user_disabled")
	// A token for blog and shop only.
	wantProblem(t, "GET /v1/whoami with a token without billing's audience",
		p.Do(t, "GET", "/v1/whoami", iss.Token(t, alice), ""), "unauthenticated")
	wantProblem(t, "GET /v1/whoami without a token", p.Do(t, "GET", "/v1/whoami", "", ""), "unauthenticated")

	if m := p.Do(t, "GET", "/metrics", "", ""); m.Status != http.StatusOK || !strings.Contains(string(m.Body), "replica_last_applied_sequence") {
		t.Errorf("GET /metrics = %d, want 200 with the replica's metrics", m.Status)
	}

	// The request's lines, the access line and the handler's, carry its id and the user.
	lines := logLines(t, p.Logs(), "whoami-alice")
	var access, own bool
	for _, l := range lines {
		if l["user_id"] != alice.ID.String() {
			t.Errorf("line %v of alice's request: user_id, want %s", l, alice.ID)
		}
		access = access || (l["msg"] == "request" && l["route"] == "GET /v1/whoami" && l["status"] == 200.0)
		own = own || l["msg"] == "whoami"
	}
	if !access || !own {
		t.Errorf("alice's request logged %v; want its access line and the handler's line", lines)
	}

	// The identity is billing's alone: it may not touch blog's or shop's durable, nor delete its own.
	var subjects []string
	for _, d := range []string{"blog", "shop"} {
		subjects = append(subjects, "$JS.API.CONSUMER.CREATE.USERS."+d, "$JS.API.CONSUMER.CREATE.USERS."+d+".users.>",
			"$JS.API.CONSUMER.MSG.NEXT.USERS."+d, "$JS.ACK.USERS."+d+".1.1.1.1.1.0", "$JS.API.CONSUMER.DELETE.USERS."+d)
	}
	subjects = append(subjects, "$JS.API.CONSUMER.DELETE.USERS.billing")
	for _, subject := range allowed(t, url, "billing", subjects) {
		t.Errorf("billing's identity may publish to %s", subject)
	}
}

// allowed returns the subjects among subjects that the server lets user publish to: it publishes
// to each, and waits a second for the refusals.
func allowed(t *testing.T, url, user string, subjects []string) []string {
	t.Helper()
	var (
		mu      sync.Mutex
		refused []string
	)
	nc, err := nats.Connect(url, nats.UserInfo(user, natstest.Password(user)), nats.CustomInboxPrefix(bus.InboxPrefix(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				mu.Lock()
				refused = append(refused, err.Error())
				mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	defer nc.Close()
	for _, s := range subjects {
		if err := nc.Publish(s, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []string
	deadline := time.Now().Add(time.Second)
	for {
		mu.Lock()
		out = slices.DeleteFunc(slices.Clone(subjects), func(s string) bool {
			return slices.ContainsFunc(refused, func(e string) bool { return strings.Contains(e, `"`+s+`"`) })
		})
		mu.Unlock()
		if len(out) == 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantProblem checks that r is a problem with the given code.
func wantProblem(t *testing.T, what string, r servicetest.Response, code string) {
	t.Helper()
	var p struct {
		Code string `json:"code"`
	}
	if json.Unmarshal(r.Body, &p) != nil || p.Code != code || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s = %d %s, want a problem %s", what, r.Status, r.Body, code)
	}
}

// logLines returns the JSON lines of log with the given request id.
func logLines(t *testing.T, log, requestID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["request_id"] == requestID {
			out = append(out, m)
		}
	}
	return out
}

// startNATS starts a NATS server for the test with deploy/nats/auth.conf and identity added to its
// users, and returns its URL (without credentials).
func startNATS(t *testing.T, identity string) string {
	t.Helper()
	conf, err := natstest.AuthConf() // also puts the test passwords of its identities in the environment
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	const list = "\n  users: [\n"
	before, after, ok := strings.Cut(string(raw), list)
	if !ok {
		t.Fatalf("%s has no %q", conf, strings.TrimSpace(list))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.conf")
	if err := os.WriteFile(path, []byte(before+list+identity+"\n"+after), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_BILLING_PASSWORD", natstest.Password("billing"))
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("auth.conf with the page's identity: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, filepath.Join(dir, "jetstream")
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return "nats://" + srv.Addr().(*net.TCPAddr).String()
}

// jetStream connects to url as user, the way the service of that name does, until the test ends.
func jetStream(t *testing.T, url, user string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, natstest.Password(user)), nats.CustomInboxPrefix(bus.InboxPrefix(user)))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
