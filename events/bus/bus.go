// Package bus connects to NATS and declares the JetStream resources of the contract: the USERS
// stream, the durable consumers of the replicas, and the key-value bucket of public keys.
// Declarations are idempotent: every service calls them at start and creates what is absent.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect connects to url as client name and keeps reconnecting for as long as the process runs,
// so that an outage of the broker is survived; it fails only when the first connection cannot be
// made within timeout.
func Connect(ctx context.Context, url, name string, timeout time.Duration, log *slog.Logger) (*nats.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		nc, err := nats.Connect(url,
			nats.Name(name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(500*time.Millisecond),
			nats.Timeout(2*time.Second),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("nats disconnected", "err", err)
				}
			}),
			nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", "err", err) }),
		)
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to nats at %s: %w", url, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats at %s: %w", url, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
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

// Consumer settings of the replicas.
const (
	AckWait       = 30 * time.Second
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
