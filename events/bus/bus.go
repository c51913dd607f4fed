// Package bus connects to NATS and declares the JetStream resources of the contract: the USERS
// stream, the durable consumers of the replicas, and the key-value bucket of public keys.
// Declarations are idempotent. Only account creates the stream and the bucket (EnsureStream,
// EnsureKeyBucket); blog and shop may only create their own durable consumer (EnsureConsumer),
// and find the rest with Stream and KeyBucket: deploy/nats/auth.conf grants no more.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/authmesh/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnConfig says how a service connects to NATS.
type ConnConfig struct {
	// URL is NATS_URL: one server URL, or several comma-separated for a cluster. Credentials may be
	// given in it, as nats://user:password@host:4222 (or nats://token@host:4222); they are used
	// for every server of the cluster, those the client discovers included, and never logged.
	URL string
	// Creds is NATS_CREDS: the path of a credentials file (user JWT and seed), for deployments on
	// NATS's decentralized JWT authentication. Optional.
	Creds string
	// Service is the identity's service: account, blog or shop. It names the client's inbox
	// (InboxPrefix), which is the only subject deploy/nats/auth.conf lets the service subscribe to.
	Service string
	// Name is the client's name as the server shows it; Service when empty.
	Name string
}

// InboxPrefix is the prefix of the reply subjects of service's requests: its own, so that no
// service may read the replies to another's requests (deploy/nats/auth.conf).
func InboxPrefix(service string) string { return "_INBOX_" + service }

// Connect connects as cfg says and keeps reconnecting, every 50 to 75 ms, for as long as the
// process runs, so that an outage of the broker is survived, a refusal of the credentials included
// (the broker may be restarting with a new configuration). It fails only when the first connection
// cannot be made within timeout.
func Connect(ctx context.Context, cfg ConnConfig, timeout time.Duration, log *slog.Logger) (*nats.Conn, error) {
	servers, auth, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	name := cfg.Name
	if name == "" {
		name = cfg.Service
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		// A broker that comes back is found within 75 ms (after each pass over the server list),
		// so that account's outbox publishes again at once after an outage. An attempt at a server
		// that is down costs a refused TCP connection.
		nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectJitter(25*time.Millisecond, 25*time.Millisecond),
		nats.Timeout(2 * time.Second),
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", "err", err) }),
	}
	if cfg.Service != "" {
		opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(cfg.Service)))
	}
	opts = append(opts, auth...)
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	where := Redact(cfg.URL)
	deadline := time.Now().Add(timeout)
	for {
		nc, err := nats.Connect(servers, opts...)
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to nats at %s: %w", where, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats at %s: %w", where, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ParseURL splits NATS_URL into the server list for nats.Connect, without credentials, and the
// option that carries them: user and password, or a token. The URLs of the list that carry
// credentials must carry the same ones; an unparsable URL is an error that does not quote it.
func ParseURL(raw string) (servers string, auth []nats.Option, err error) {
	var (
		list []string
		cred *url.Userinfo
	)
	for i, s := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			return "", nil, fmt.Errorf("NATS_URL: URL %d of the list is not a URL such as nats://user:password@host:4222", i+1)
		}
		switch {
		case u.User == nil:
		case cred == nil:
			cred = u.User
		case cred.String() != u.User.String():
			return "", nil, errors.New("NATS_URL: the URLs of the list carry different credentials")
		}
		u.User = nil
		list = append(list, u.String())
	}
	if cred != nil {
		if pw, ok := cred.Password(); ok {
			auth = []nats.Option{nats.UserInfo(cred.Username(), pw)}
		} else {
			auth = []nats.Option{nats.Token(cred.Username())}
		}
	}
	return strings.Join(list, ","), auth, nil
}

// Redact returns NATS_URL fit for a log: the user of each URL kept, any password or token
// replaced by "redacted".
func Redact(raw string) string {
	var out []string
	for _, s := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		switch {
		case err != nil:
			out = append(out, "(unparsable)")
			continue
		case u.User == nil:
		case hasPassword(u.User):
			u.User = url.UserPassword(u.User.Username(), "redacted")
		default: // a token
			u.User = url.User("redacted")
		}
		out = append(out, u.String())
	}
	return strings.Join(out, ",")
}

func hasPassword(u *url.Userinfo) bool {
	_, ok := u.Password()
	return ok
}

// StreamConfig is the configuration of the USERS stream: file storage, limits retention with no
// age limit (the history feeds rebuilds), and the contract's duplicate window.
func StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.StreamName,
		Description: "Every change of every user, published by account.",
		Subjects:    []string{events.StreamSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      0,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Duplicates:  events.DuplicateWindow,
		Replicas:    1,
	}
}

// EnsureStream creates the USERS stream if it does not exist and returns it. An existing stream is
// left as it is (an operator may have raised its replicas).
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, events.StreamName)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %s: %w", events.StreamName, err)
	}
	s, err = js.CreateStream(ctx, StreamConfig())
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, events.StreamName)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", events.StreamName, err)
	}
	return s, nil
}

// Consumer settings of the replicas. AckWait is also how long the events an instance held when it
// crashed wait before the server sends them again (to it, restarted, or to another instance): a
// revocation among them is enforced that much later. So it is short, only above the bound a
// batch's apply has (events/replica: every statement ends within Postgres's statement_timeout of
// 5 s, a batch within 8 s, or it is given back with a nak).
const (
	AckWait       = 10 * time.Second
	MaxAckPending = 1024
)

// ConsumerConfig is the configuration of a replica's durable pull consumer: explicit ack, every
// event from the start of the stream on first creation.
func ConsumerConfig(durable string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "User replica of " + durable,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxDeliver:    -1,
		FilterSubject: events.StreamSubjects,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxAckPending: MaxAckPending,
	}
}

// EnsureConsumer creates the durable consumer if it does not exist and returns it.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, durable string) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, events.StreamName, durable)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("look up consumer %s: %w", durable, err)
	}
	c, err = js.CreateConsumer(ctx, events.StreamName, ConsumerConfig(durable))
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", durable, err)
	}
	return c, nil
}

// EnsureKeyBucket creates the key-value bucket of public keys if it does not exist and returns it.
func EnsureKeyBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, events.KeysBucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("look up bucket %s: %w", events.KeysBucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.KeysBucket,
		Description: "Public keys of account (JWKS).",
		History:     5,
		Storage:     jetstream.FileStorage,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(ctx, events.KeysBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", events.KeysBucket, err)
	}
	return kv, nil
}
