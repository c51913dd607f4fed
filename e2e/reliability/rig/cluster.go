package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/authmesh/e2e/reliability/broker"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NodeStates reads what every running node holds of the USERS stream, each from its own /jsz, by
// node name. A node that runs and answers without the stream is reported with a zero state.
func (s *System) NodeStates(ctx context.Context) (map[string]broker.StreamState, error) {
	out := map[string]broker.StreamState{}
	for _, nd := range s.Broker.Nodes {
		if !nd.Running() {
			continue
		}
		st, _, err := nd.StreamState(ctx, events.StreamName)
		if err != nil {
			return nil, err
		}
		out[nd.Name] = st
	}
	return out, nil
}

// SameState tells whether every node of the broker runs and holds the same USERS stream (messages,
// first and last sequence), none of it missing (messages = last - first + 1), and if not, why.
func SameState(states map[string]broker.StreamState, nodes int) (bool, string) {
	if len(states) != nodes {
		return false, fmt.Sprintf("%d of %d nodes answer", len(states), nodes)
	}
	var first *broker.StreamState
	for _, st := range states {
		if first == nil {
			first = &st
		}
		if st.Msgs != first.Msgs || st.LastSeq != first.LastSeq || st.FirstSeq != first.FirstSeq {
			return false, DescribeStates(states)
		}
	}
	if first.Msgs == 0 || first.Msgs != first.LastSeq-first.FirstSeq+1 {
		return false, "stream with holes or empty: " + DescribeStates(states)
	}
	return true, ""
}

// DescribeStates prints the states of NodeStates in node order: "n1 1000 msgs 1..1000 (leader n2)".
func DescribeStates(states map[string]broker.StreamState) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(states)) {
		st := states[name]
		parts = append(parts, fmt.Sprintf("%s %d msgs %d..%d (leader %q)", name, st.Msgs, st.FirstSeq, st.LastSeq, st.Leader))
	}
	return strings.Join(parts, "; ")
}

// WaitSameState waits until every node holds the same USERS stream (SameState), at most timeout,
// and returns how long that took.
func (s *System) WaitSameState(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var why string
	err := Within(timeout, func() bool {
		states, err := s.NodeStates(ctx)
		if err != nil {
			why = err.Error()
			return false
		}
		var ok bool
		ok, why = SameState(states, len(s.Broker.Nodes))
		return ok
	})
	if err != nil {
		return time.Since(start), fmt.Errorf("nodes do not hold the same stream within %s: %s", timeout, why)
	}
	return time.Since(start), nil
}

// WaitNewLeader waits until a running node names a leader of the USERS stream other than old, at
// most timeout, and returns it.
func (s *System) WaitNewLeader(ctx context.Context, old string, timeout time.Duration) (string, error) {
	var leader string
	err := Within(timeout, func() bool {
		l, err := s.Broker.Leader(ctx, events.StreamName)
		leader = l
		return err == nil && l != old
	})
	if err != nil {
		return "", fmt.Errorf("no stream leader other than %s within %s", old, timeout)
	}
	return leader, nil
}

// ReadStreamOn reads the USERS stream from sequence 1 to its last sequence as the node named node
// holds it: through a consumer of one replica, which JetStream places on a peer of the stream of
// its choosing, so it is created again (at most 30 times) until it lands on that node.
func (s *System) ReadStreamOn(ctx context.Context, node string) ([]Stored, error) {
	js, err := s.JS()
	if err != nil {
		return nil, err
	}
	str, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	var cons jetstream.Consumer
	for try := 0; ; try++ {
		c, err := str.CreateConsumer(ctx, jetstream.ConsumerConfig{
			DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
			Replicas: 1, MemoryStorage: true, InactiveThreshold: time.Minute,
		})
		if err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
		ci := c.CachedInfo()
		if ci.Cluster != nil && ci.Cluster.Leader == node {
			cons = c
			break
		}
		_ = str.DeleteConsumer(ctx, ci.Name)
		if try == 30 {
			return nil, fmt.Errorf("no consumer placed on %s in %d tries", node, try+1)
		}
	}
	defer func() { _ = str.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	var evs []Stored
	for uint64(len(evs)) < last {
		var msgs []jetstream.Msg
		var err error
		if Within(10*time.Second, func() bool {
			// A consumer just created may not take requests yet: no responders, for a moment.
			msgs, err = fetch(cons, int(min(1000, last-lastEventSeq(evs))))
			return !errors.Is(err, nats.ErrNoResponders)
		}) != nil || err != nil {
			return nil, fmt.Errorf("fetch from %s after seq %d of %d: %w", node, lastEventSeq(evs), last, err)
		}
		if len(msgs) == 0 {
			return nil, fmt.Errorf("%s delivered nothing after seq %d of %d", node, lastEventSeq(evs), last)
		}
		for _, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
			e := Stored{Event: checker.Event{Seq: meta.Sequence.Stream}, At: meta.Timestamp}
			var ev events.Event
			if json.Unmarshal(m.Data(), &ev) == nil {
				e.Event.Event = ev
			}
			evs = append(evs, e)
			if e.Seq >= last {
				return evs, nil
			}
		}
	}
	return evs, nil
}

// fetch fetches n messages from cons, or fewer if they do not come within 5 s.
func fetch(cons jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && len(msgs) == 0 {
		return nil, err
	}
	return msgs, nil
}

func lastEventSeq(evs []Stored) uint64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// Stored is a message of the stream as a node holds it: its sequence, its event (zero when it
// does not decode), and when the stream took it.
type Stored struct {
	checker.Event
	At time.Time
}

// SameContent compares the streams ReadStreamOn read from two nodes and describes the first
// difference, or returns "".
func SameContent(a, b []Stored) string {
	for i := range min(len(a), len(b)) {
		if a[i].Seq != b[i].Seq || a[i].ID != b[i].ID {
			return fmt.Sprintf("message %d: seq %d id %s against seq %d id %s", i, a[i].Seq, a[i].ID, b[i].Seq, b[i].ID)
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d messages against %d", len(a), len(b))
	}
	return ""
}

// Stalls are what the stream's own times tell of its publishers' waits.
type Stalls struct {
	// Longest is the longest time the stream took no message while an event waited for it (had
	// occurred, in account, and was not yet in the stream): a leader election, an outage.
	Longest time.Duration
	// From is when that stall began.
	From time.Time
	// MaxDelay is the longest time from an event's occurrence to its message in the stream.
	MaxDelay time.Duration
}

// PublishStalls computes the Stalls of a stream read by ReadStreamOn.
func PublishStalls(evs []Stored) Stalls {
	var st Stalls
	// waiting[i] is the earliest occurrence among the events stored after message i.
	waiting := make([]time.Time, len(evs))
	var earliest time.Time
	for i := len(evs) - 1; i >= 0; i-- {
		waiting[i] = earliest
		if o := evs[i].OccurredAt; !o.IsZero() && (earliest.IsZero() || o.Before(earliest)) {
			earliest = o
		}
		if o := evs[i].OccurredAt; !o.IsZero() {
			st.MaxDelay = max(st.MaxDelay, evs[i].At.Sub(o))
		}
	}
	for i := 0; i+1 < len(evs); i++ {
		if waiting[i].IsZero() {
			continue
		}
		from := evs[i].At
		if waiting[i].After(from) {
			from = waiting[i]
		}
		if d := evs[i+1].At.Sub(from); d > st.Longest {
			st.Longest, st.From = d, from
		}
	}
	return st
}
