package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The permission matrix of deploy/nats/auth.conf, driven against a real server: every identity
// tries every action, and the broker allows exactly what the contract grants ("NATS access").

// target is what an action works on: the identity's own connection, and an operator's.
type target struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	ops jetstream.JetStream
}

// action does one thing as the identity. It returns nil when the broker let it, an error
// otherwise; ctx is cancelled as soon as the broker reports a permissions violation.
type action func(ctx context.Context, t target) error

var (
	all     = []string{natstest.Account, natstest.Blog, natstest.Shop, natstest.Ops}
	readers = []string{natstest.Blog, natstest.Shop, natstest.Ops}
	writers = []string{natstest.Account, natstest.Ops}
	ops     = []string{natstest.Ops}
)

// matrix lists the actions in the order they run; those that destroy the set-up come last.
var matrix = []struct {
	name    string
	allowed []string
	do      action
}{
	{"read the key bucket", all, func(ctx context.Context, t target) error {
		kv, err := t.js.KeyValue(ctx, events.KeysBucket)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, events.KeysKey)
		return err
	}},
	{"watch the key bucket", readers, func(ctx context.Context, t target) error {
		kv, err := t.js.KeyValue(ctx, events.KeysBucket)
		if err != nil {
			return err
		}
		w, err := kv.Watch(ctx, events.KeysKey)
		if err != nil {
			return err
		}
		defer w.Stop()
		select {
		case e := <-w.Updates():
			if e == nil {
				return errors.New("no initial value")
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}},
	{"put a key set in the bucket", writers, func(ctx context.Context, t target) error {
		kv, err := t.js.KeyValue(ctx, events.KeysBucket)
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, events.KeysKey, []byte(`{"keys":[]}`))
		return err
	}},
	{"delete the key set", writers, func(ctx context.Context, t target) error {
		kv, err := t.js.KeyValue(ctx, events.KeysBucket)
		if err != nil {
			return err
		}
		return kv.Delete(ctx, events.KeysKey)
	}},
	{"purge the key set", writers, func(ctx context.Context, t target) error {
		kv, err := t.js.KeyValue(ctx, events.KeysBucket)
		if err != nil {
			return err
		}
		return kv.Purge(ctx, events.KeysKey)
	}},
	{"purge the bucket's stream", ops, func(ctx context.Context, t target) error {
		s, err := t.js.Stream(ctx, "KV_"+events.KeysBucket)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	}},
	{"publish an event", writers, func(ctx context.Context, t target) error {
		_, err := t.js.Publish(ctx, events.Subject(events.UserRoleChanged, authtest.NewUser().ID), forgedEvent())
		return err
	}},
	{"get stream info", all, func(ctx context.Context, t target) error {
		s, err := t.js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		_, err = s.Info(ctx)
		return err
	}},
	{"read a message of the stream", all, func(ctx context.Context, t target) error {
		s, err := t.js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		_, err = s.GetMsg(ctx, 1)
		return err
	}},
	{"read the stream with an ordered consumer", all, func(ctx context.Context, t target) error {
		c, err := t.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		_, err = c.Next(jetstream.FetchMaxWait(time.Second))
		return err
	}},
	{"read the last message of each subject with an ordered consumer", all, func(ctx context.Context, t target) error {
		c, err := t.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.StreamSubjects},
			DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		})
		if err != nil {
			return err
		}
		_, err = c.Next(jetstream.FetchMaxWait(time.Second))
		return err
	}},
	{"update the stream", writers, func(ctx context.Context, t target) error {
		cfg := bus.StreamConfig()
		cfg.Description = "changed"
		_, err := t.js.UpdateStream(ctx, cfg)
		return err
	}},
	{"purge the stream", ops, func(ctx context.Context, t target) error {
		s, err := t.js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	}},
	{"delete a message of the stream", ops, func(ctx context.Context, t target) error {
		info, err := t.ops.Stream(ctx, events.StreamName) // the set-up's event, which nothing purged
		if err != nil {
			return err
		}
		last := info.CachedInfo().State.LastSeq
		s, err := t.js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		return s.DeleteMsg(ctx, last)
	}},
	{"create another stream", ops, func(ctx context.Context, t target) error {
		_, err := t.js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
		return err
	}},
	{"create or update durable blog", []string{natstest.Blog, natstest.Ops}, declare("blog")},
	{"create or update durable shop", []string{natstest.Shop, natstest.Ops}, declare("shop")},
	{"create durable shop through the legacy durable subject", ops, legacyCreate("$JS.API.CONSUMER.DURABLE.CREATE.USERS.shop", `{"durable_name":"shop","ack_policy":"explicit","filter_subject":"users.>","max_deliver":-1}`)},
	{"create a consumer through the legacy subject (its name in the payload)", ops, legacyCreate("$JS.API.CONSUMER.CREATE.USERS", `{"name":"shop","ack_policy":"explicit","filter_subject":"users.>"}`)},
	{"fetch from durable blog", []string{natstest.Blog, natstest.Ops}, fetch("blog")},
	{"fetch from durable shop", []string{natstest.Shop, natstest.Ops}, fetch("shop")},
	{"acknowledge for durable blog", []string{natstest.Blog, natstest.Ops}, ack("blog")},
	{"acknowledge for durable shop", []string{natstest.Shop, natstest.Ops}, ack("shop")},
	{"delete durable blog", ops, func(ctx context.Context, t target) error {
		return t.js.DeleteConsumer(ctx, events.StreamName, "blog")
	}},
	{"delete durable shop", ops, func(ctx context.Context, t target) error {
		return t.js.DeleteConsumer(ctx, events.StreamName, "shop")
	}},
	{"subscribe to the events", ops, subscribe(events.StreamSubjects)},
	{"subscribe to every inbox", ops, subscribe("_INBOX.>")},
	{"subscribe to account's inbox", []string{natstest.Account, natstest.Ops}, subscribe(bus.InboxPrefix(natstest.Account) + ".>")},
	{"publish to an inbox (forge a reply)", ops, func(ctx context.Context, t target) error {
		if err := t.nc.Publish(bus.InboxPrefix(natstest.Account)+".forged", []byte("+OK")); err != nil {
			return err
		}
		return quiet(ctx, t.nc)
	}},
	{"delete the bucket", ops, func(ctx context.Context, t target) error {
		return t.js.DeleteKeyValue(ctx, events.KeysBucket)
	}},
	{"delete the stream", ops, func(ctx context.Context, t target) error {
		return t.js.DeleteStream(ctx, events.StreamName)
	}},
}

// forgedEvent is the attack of issue 7: a role change pinning a user at a version no real change
// can ever pass.
func forgedEvent() []byte {
	u := authtest.NewUser(events.RoleAdmin)
	u.Version = 9_000_000_000_000_000_000
	e, _ := events.NewEvent(events.UserRoleChanged, u, time.Now())
	data, _ := json.Marshal(e)
	return data
}

func declare(durable string) action {
	return func(ctx context.Context, t target) error {
		_, err := t.js.CreateOrUpdateConsumer(ctx, events.StreamName, bus.ConsumerConfig(durable))
		return err
	}
}

// legacyCreate sends a consumer create request on a legacy subject and reports the API's error.
func legacyCreate(subject, config string) action {
	return func(ctx context.Context, t target) error {
		req := fmt.Sprintf(`{"stream_name":%q,"config":%s}`, events.StreamName, config)
		msg, err := t.nc.RequestWithContext(ctx, subject, []byte(req))
		if err != nil {
			return err
		}
		var resp struct {
			Error *struct{ Description string } `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return err
		}
		if resp.Error != nil {
			return errors.New(resp.Error.Description)
		}
		return nil
	}
}

func fetch(durable string) action {
	return func(ctx context.Context, t target) error {
		c, err := t.js.Consumer(ctx, events.StreamName, durable)
		if err != nil {
			return err
		}
		b, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		n := 0
		for range b.Messages() {
			n++
		}
		if n == 0 {
			return fmt.Errorf("no message fetched (%v)", b.Error())
		}
		return nil
	}
}

// ack takes a message delivered by the durable (the operator fetches it) and acknowledges it as
// the identity; it reports whether the server took the acknowledgement.
func ack(durable string) action {
	return func(ctx context.Context, t target) error {
		c, err := t.ops.Consumer(ctx, events.StreamName, durable)
		if err != nil {
			return err
		}
		msg, err := c.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		before, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if err := t.nc.Publish(msg.Reply(), []byte("+ACK")); err != nil {
			return err
		}
		if err := t.nc.FlushWithContext(ctx); err != nil {
			return err
		}
		for {
			info, err := c.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumAckPending < before.NumAckPending {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func subscribe(subject string) action {
	return func(ctx context.Context, t target) error {
		sub, err := t.nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		return quiet(ctx, t.nc)
	}
}

// quiet flushes nc and waits a moment: a refusal of what was just sent arrives meanwhile, and
// cancels ctx.
func quiet(ctx context.Context, nc *nats.Conn) error {
	if err := nc.FlushWithContext(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}

// setUp gives the server what the system has once account has started and blog and shop have
// declared their durables: the stream with a fresh event, the bucket with a key set, both durables.
func setUp(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := bus.EnsureStream(ctx, js); err != nil {
		t.Fatalf("set up: %v", err)
	}
	for _, durable := range []string{"blog", "shop"} {
		if _, err := bus.EnsureConsumer(ctx, js, durable); err != nil {
			t.Fatalf("set up: %v", err)
		}
	}
	if _, err := js.Publish(ctx, events.Subject(events.UserCreated, authtest.NewUser().ID), []byte(`{}`)); err != nil {
		t.Fatalf("set up: %v", err)
	}
	kv, err := bus.EnsureKeyBucket(ctx, js)
	if err != nil {
		t.Fatalf("set up: %v", err)
	}
	if _, err := kv.Put(ctx, events.KeysKey, authtest.NewIssuer(t).JWKS(t)); err != nil {
		t.Fatalf("set up: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	for _, user := range all {
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			srv := natstest.New(t)
			opsJS := srv.JetStream(t, natstest.Ops)
			violation := make(chan error, 16)
			nc, err := srv.Dial(user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					select {
					case violation <- err:
					default:
					}
				}
			}))
			if err != nil {
				t.Fatalf("connect as %s: %v", user, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			tg := target{nc: nc, js: js, ops: opsJS}
			for _, a := range matrix {
				setUp(t, opsJS)
				for len(violation) > 0 { // a late refusal of the previous action
					<-violation
				}
				refused, err := try(t.Context(), tg, a.do, violation)
				want := slices.Contains(a.allowed, user)
				switch {
				case want && (refused != nil || err != nil):
					t.Errorf("%s: %s refused (%v, %v); the contract allows it", user, a.name, refused, err)
				case !want && refused == nil:
					t.Errorf("%s: %s allowed (action returned %v); the contract refuses it", user, a.name, err)
				}
			}
		})
	}
}

// try runs do and returns the permissions violation the server reported meanwhile, if any, and
// do's own error.
func try(ctx context.Context, tg target, do action, violation <-chan error) (refused, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var (
		mu  sync.Mutex
		got error
	)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case v := <-violation:
			mu.Lock()
			got = v
			mu.Unlock()
			cancel()
		case <-stop:
		}
	}()
	err = do(ctx, tg)
	if err == nil {
		// A refusal can trail the success of what was asked before it (a lookup allowed, then
		// a write refused): a round trip makes sure it would have arrived.
		_ = tg.nc.FlushTimeout(time.Second)
	}
	time.Sleep(10 * time.Millisecond) // the error handler runs on its own goroutine
	mu.Lock()
	defer mu.Unlock()
	return got, err
}

func TestConnectRefused(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t)
	tests := []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"unknown user", []nats.Option{nats.UserInfo("mallory", "mallory")}},
	}
	for _, user := range all {
		tests = append(tests, struct {
			name string
			opts []nats.Option
		}{user + " with a wrong password", []nats.Option{nats.UserInfo(user, natstest.Password(user)+"x")}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(srv.URL, append(tt.opts, nats.MaxReconnects(0), nats.Timeout(2*time.Second))...)
			if err == nil {
				nc.Close()
				t.Fatalf("connect %s: accepted, want refused", tt.name)
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("connect %s = %v, want an authorization violation", tt.name, err)
			}
		})
	}
}
