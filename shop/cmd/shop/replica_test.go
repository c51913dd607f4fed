package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/replica/replicacmd"
)

func TestReplicaCommands(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	p := start(t, iss)
	u := authtest.NewUser()
	authtest.PublishUser(t, p.js, events.UserCreated, u)
	p.authenticated(t, iss.Token(t, u))

	replica := func(args ...string) (string, error) {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := run(ctx, append([]string{"replica"}, args...), func(k string) string { return p.Env[k] }, &out, &out)
		return out.String(), err
	}
	out, err := replica("status", "--json")
	if err != nil {
		t.Fatalf("replica status --json = %v\n%s", err, out)
	}
	var st struct {
		StreamLastSeq uint64 `json:"stream_last_seq"`
		AppliedSeq    uint64 `json:"applied_seq"`
		Users         int    `json:"users"`
		Consumer      struct {
			Name string `json:"name"`
		} `json:"consumer"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.StreamLastSeq != 1 || st.AppliedSeq != 1 || st.Users != 1 || st.Consumer.Name != "shop" {
		t.Errorf("replica status --json = %s (%v)", out, err)
	}
	if out, err := replica("rebuild"); err != nil || !strings.Contains(out, "events read 1, applied 1") {
		t.Errorf("replica rebuild = %v\n%s", err, out)
	}
	if out, err := replica("verify"); err != nil {
		t.Errorf("replica verify = %v\n%s", err, out)
	}
	if out, err := replica("dead-letters"); err != nil || !strings.Contains(out, "no dead letters") {
		t.Errorf("replica dead-letters = %v\n%s", err, out)
	}
	var code replicacmd.ExitCode
	if _, err := replica("rebuild", "--from-seq", "0"); !errors.As(err, &code) || code != 2 {
		t.Errorf("replica rebuild --from-seq 0 = %v, want exit code 2", err)
	}
}
