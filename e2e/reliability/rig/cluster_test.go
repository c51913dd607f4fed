package rig

import (
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/broker"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/events"
	"github.com/google/uuid"
)

func TestSameState(t *testing.T) {
	st := broker.StreamState{Msgs: 10, FirstSeq: 1, LastSeq: 10, Leader: "n1"}
	behind := st
	behind.Msgs, behind.LastSeq = 9, 9
	holes := st
	holes.Msgs = 9
	tests := []struct {
		name   string
		states map[string]broker.StreamState
		want   bool
		why    string
	}{
		{"equal", map[string]broker.StreamState{"n1": st, "n2": st, "n3": st}, true, ""},
		{"one behind", map[string]broker.StreamState{"n1": st, "n2": behind, "n3": st}, false, "n2 9 msgs 1..9"},
		{"one missing", map[string]broker.StreamState{"n1": st, "n3": st}, false, "2 of 3 nodes answer"},
		{"holes everywhere", map[string]broker.StreamState{"n1": holes, "n2": holes, "n3": holes}, false, "holes"},
		{"empty everywhere", map[string]broker.StreamState{"n1": {}, "n2": {}, "n3": {}}, false, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := SameState(tt.states, 3)
			if got != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("SameState = %v, %q; want %v, containing %q", got, why, tt.want, tt.why)
			}
		})
	}
}

func stored(seq uint64, id uuid.UUID, occurred, at time.Time) Stored {
	return Stored{Event: checker.Event{Seq: seq, Event: events.Event{ID: id, OccurredAt: occurred}}, At: at}
}

func TestSameContent(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	var now time.Time
	base := []Stored{stored(1, a, now, now), stored(2, b, now, now)}
	tests := []struct {
		name  string
		other []Stored
		want  string
	}{
		{"same", []Stored{stored(1, a, now, now), stored(2, b, now, now)}, ""},
		{"other id", []Stored{stored(1, a, now, now), stored(2, c, now, now)}, "message 1"},
		{"other seq", []Stored{stored(1, a, now, now), stored(3, b, now, now)}, "message 1"},
		{"shorter", []Stored{stored(1, a, now, now)}, "2 messages against 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SameContent(base, tt.other)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("SameContent = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPublishStalls(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(seq uint64, occurred, took int) Stored { return stored(seq, uuid.New(), at(occurred), at(took)) }
	tests := []struct {
		name              string
		evs               []Stored
		longest, maxDelay time.Duration
		from              time.Time
	}{
		{"steady", []Stored{ev(1, 0, 5), ev(2, 10, 15), ev(3, 20, 25)}, 5 * time.Millisecond, 5 * time.Millisecond, at(10)},
		// Nothing waited between 5 and 1000: an idle stream is no stall.
		{"idle", []Stored{ev(1, 0, 5), ev(2, 1000, 1002)}, 2 * time.Millisecond, 5 * time.Millisecond, at(1000)},
		// An election: events of 100 and 200 wait until 4100.
		{"election", []Stored{ev(1, 0, 5), ev(2, 100, 4100), ev(3, 200, 4101), ev(4, 4200, 4201)},
			4000 * time.Millisecond, 4000 * time.Millisecond, at(100)},
		{"one", []Stored{ev(1, 0, 7)}, 0, 7 * time.Millisecond, time.Time{}},
		{"none", nil, 0, 0, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PublishStalls(tt.evs)
			if got.Longest != tt.longest || got.MaxDelay != tt.maxDelay || !got.From.Equal(tt.from) {
				t.Errorf("PublishStalls = %+v, want longest %s from %s, max delay %s", got, tt.longest, tt.from, tt.maxDelay)
			}
		})
	}
}
