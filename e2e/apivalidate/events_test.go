package apivalidate

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// message is a message read from the stream USERS.
type message struct {
	subject string
	header  nats.Header
	data    []byte
}

// TestEventsMatchAsyncAPI: every message that the running account has published on USERS (the
// bootstrap admin's and a user's registration, change of roles and of status, and whatever the
// other tests made) agrees with docs/asyncapi.yaml and the JSON Schema of events/schema.
func TestEventsMatchAsyncAPI(t *testing.T) {
	s := live(t)
	e, err := LoadEvents(asyncAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	msgs := realEvents(t, s)
	types := map[string]int{}
	for _, m := range msgs {
		types[strings.Split(m.subject, ".")[1]]++
		if err := e.Check(m.subject, m.header, m.data); err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d events checked, by type %v", len(msgs), types)
	for _, typ := range []string{"created", "role_changed", "status_changed"} {
		if types[typ] == 0 {
			t.Errorf("no %s event among the %d read", typ, len(msgs))
		}
	}
}

// TestEventSchemaCatchesDrift: copies of docs/asyncapi.yaml and of the schema files that differ
// from what account publishes in one place refuse its real events, naming the difference, where
// the files of the repository accept them: the validation can fail.
func TestEventSchemaCatchesDrift(t *testing.T) {
	s := live(t)
	msgs := realEvents(t, s)
	cases := []struct {
		name, file, old, new, want string
	}{
		{"a field of another type", "events/schema/user.schema.json",
			`"type": "integer",`, `"type": "string",`, "/user/version"},
		{"a field the event lacks", "events/schema/user.schema.json",
			`"required": ["id",`, `"required": ["nickname", "id",`, "nickname"},
		{"a field the schema lacks", "events/schema/user.schema.json",
			`"display_name": {`, `"name": {`, "display_name"},
		{"a type the schema lacks", "events/schema/event.schema.json",
			`, "user.status_changed"]`, `]`, "/type"},
		{"another address", "docs/asyncapi.yaml",
			"address: users.{type}.{user_id}", "address: users.{type}.v1.{user_id}", "address"},
		{"a header the message lacks", "docs/asyncapi.yaml",
			"            - Nats-Msg-Id\n", "            - Nats-Msg-Id\n            - Authmesh-Version\n", "Authmesh-Version"},
		{"a header the document lacks", "docs/asyncapi.yaml",
			"            Nats-Expected-Stream:\n", "            Expected-Stream:\n", "Nats-Expected-Stream"},
	}
	var status message // a user.status_changed event, which every case refuses
	for _, m := range msgs {
		if strings.HasPrefix(m.subject, "users.status_changed.") {
			status = m
		}
	}
	if status.subject == "" {
		t.Fatal("no status_changed event")
	}
	good, err := LoadEvents(asyncAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Check(status.subject, status.header, status.data); err != nil {
		t.Fatalf("the documents of the repository: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"docs/asyncapi.yaml", "events/schema/event.schema.json", "events/schema/user.schema.json"} {
				data, err := os.ReadFile(filepath.Join(root, f))
				if err != nil {
					t.Fatal(err)
				}
				if f == c.file {
					if !strings.Contains(string(data), c.old) {
						t.Fatalf("%s has no %q to change", f, c.old)
					}
					data = []byte(strings.Replace(string(data), c.old, c.new, 1))
				}
				if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			bad, err := LoadEvents(filepath.Join(dir, "docs", "asyncapi.yaml"))
			if err != nil {
				t.Fatalf("the changed documents: %v", err)
			}
			err = bad.Check(status.subject, status.header, status.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("the changed documents: Check = %v, want an error with %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

// realEvents makes a user and changes its roles and its status through account, waits until the
// last of these events is in the stream USERS, and returns every message of the stream, read as
// the operator (an ordered consumer: the services' durable consumers are left alone).
func realEvents(t *testing.T, s *stack.Stack) []message {
	t.Helper()
	acc := s.URL["account"]
	adm := login(t, s)
	u := newUser(t, acc, "Evelyn")
	call(t, "PUT", acc+"/v1/users/"+u.ID+"/roles", adm, `{"roles":["user","moderator"]}`, 200)
	call(t, "PUT", acc+"/v1/users/"+u.ID+"/status", adm, `{"status":"disabled"}`, 200)

	nc, err := nats.Connect(s.NATS.UserURL(natstest.Ops), nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "USERS")
	if err != nil {
		t.Fatal(err)
	}
	// account's relay publishes after the change is committed: wait for the last event.
	var last uint64
	for {
		m, err := stream.GetLastMsgForSubject(ctx, "users.status_changed."+u.ID)
		if err == nil {
			var e struct {
				User struct {
					Version int `json:"version"`
				} `json:"user"`
			}
			if json.Unmarshal(m.Data, &e) == nil && e.User.Version == 3 {
				last = m.Sequence
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("the status_changed event of %s at version 3 is not in the stream: %v", u.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []message
	for {
		m, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("read the stream after %d messages: %v", len(msgs), err)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, message{subject: m.Subject(), header: m.Headers(), data: m.Data()})
		if meta.Sequence.Stream >= last {
			return msgs
		}
	}
}

// login logs in as the system's bootstrap admin.
func login(t *testing.T, s *stack.Stack) string {
	t.Helper()
	return apitest.Login(t, s.URL["account"], s.AdminEmail, s.AdminPassword)
}
