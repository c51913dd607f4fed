package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/broker"
	"github.com/authmesh/e2e/reliability/report"
	"github.com/authmesh/e2e/reliability/rig"
	"github.com/authmesh/events"
)

// Bounds of the cluster checks.
const (
	electionTimeout = 30 * time.Second // NATS elects within its 4–9 s election timeout
	healthyTimeout  = 2 * time.Minute  // a node back (or empty) catches up on every stream
	loadTimeout     = 3 * time.Minute
)

// F02: the leader of the USERS stream in a three-node cluster is SIGKILLed in the middle of a run
// and restarted on its store 10 s later. The other two elect a leader and go on acknowledging; the
// relay holds what it cannot publish meanwhile; the restarted node catches up. Every acked change
// is in the stream once, in both replicas once, and the three nodes hold the same stream.
func TestClusterLeaderKilled(t *testing.T) {
	total, users := size(300, 10_000), size(10, 150)
	run := time.Duration(size(6, 40)) * time.Second
	// At the smoke scale the node is restarted as soon as another is leader (4–9 s, NATS's
	// election timeout), which keeps the check near 15 s.
	restartAfter := time.Duration(size(0, 10)) * time.Second
	restart := fmt.Sprintf("%s later", restartAfter)
	if restartAfter == 0 {
		restart = "as soon as a new leader is named"
	}
	row := newRow(t, "F02", "stream leader SIGKILLed in a 3-node cluster",
		fmt.Sprintf("%d events paced over %s: %d registrations, then role and status changes from 8 clients; the USERS stream's leader SIGKILLed once a third is in the stream, restarted on its store %s", total, run, users, restart),
		"a new leader within the election timeout; lost 0, applied-twice 0, divergence 0; the 3 nodes hold the same stream; no 500")
	sys := newSystem(t, rig.Options{Nodes: 3})
	ctx := context.Background()
	w := sys.NewWorkload()
	w.Registrations(ctx, users, 4)

	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		w.PacedUpdates(lctx, total-users, 8, float64(total-users)/run.Seconds())
	}()
	defer func() { cancel(); <-loaded }()
	if err := rig.Within(loadTimeout, func() bool { return lastSeq(sys) >= uint64(total/3) }); err != nil {
		t.Fatalf("the stream did not reach %d messages: at %d", total/3, lastSeq(sys))
	}

	f := killLeader(t, sys)
	row.Add("killed", fmt.Sprintf("%s (leader) at seq %d", f.killed, f.killedAtSeq))
	row.Add("leader election", f.election)
	row.Add("new leader", f.newLeader)
	time.Sleep(time.Until(f.at.Add(restartAfter)))
	nd := sys.Broker.Node(f.killed)
	restarted := time.Now()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, sys)
	row.Add("restarted after", restarted.Sub(f.at))
	row.Add("healthy after restart", time.Since(restarted))
	<-loaded
	faultEnd := time.Now()

	sys.Judge(w, row, faultEnd, time.Minute)
	evs := sameStream(t, sys, row)
	st := rig.PublishStalls(evs)
	row.Add("publish stall", st.Longest)
	row.Add("publish delay max", st.MaxDelay)
	t.Logf("killed %s at %s; new leader %s after %s; longest stall %s from %s", f.killed, f.at.Format("15:04:05.000"),
		f.newLeader, f.election, st.Longest, st.From.Format("15:04:05.000"))
}

// F02w: a node's whole data directory is lost, twice under load: a follower's, then the stream
// leader's. Each time the node is SIGKILLed, its store removed, and it is started again on the
// same name and ports, empty; it rejoins, takes the whole history from the others and is
// healthy again. No acked change is lost, and afterwards every node, read as itself, holds the
// same messages.
func TestClusterNodeStoreLost(t *testing.T) {
	slow(t)
	history, users := size(500, 10_000), size(30, 150)
	row := newRow(t, "F02w", "a cluster node's data directory lost; it rejoins empty",
		fmt.Sprintf("a 3-node cluster with %d events (%d registrations, then role and status changes), then changes from 4 clients throughout; a follower SIGKILLed, its store removed, started again on its name and ports; then the same for the stream's leader", history, users),
		"each node back healthy and holding the whole stream; lost 0, applied-twice 0, divergence 0; the 3 nodes hold the same messages; no 500")
	sys := newSystem(t, rig.Options{Nodes: 3})
	ctx := context.Background()
	w := sys.NewWorkload()
	w.Registrations(ctx, users, 4)
	w.Updates(ctx, history-users, 8)
	stop := w.BackgroundUpdates(ctx, 4)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()

	leader, err := sys.Broker.Leader(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var follower string
	for _, nd := range sys.Broker.Nodes {
		if nd.Name != leader {
			follower = nd.Name
			break
		}
	}
	nd := sys.Broker.Node(follower)
	nd.Kill()
	wipeAndRejoin(t, sys, nd, row, "follower "+follower)

	f := killLeader(t, sys)
	row.Add("leader election", f.election)
	wipeAndRejoin(t, sys, sys.Broker.Node(f.killed), row, "leader "+f.killed)
	faultEnd := time.Now()
	stopped = true
	row.Add("changes during the faults", stop())

	sys.Judge(w, row, faultEnd, time.Minute)
	evs := sameStream(t, sys, row)
	st := rig.PublishStalls(evs)
	row.Add("publish stall", st.Longest)
	row.Add("publish delay max", st.MaxDelay)
}

// fault is what killLeader did.
type fault struct {
	killed, newLeader string
	killedAtSeq       uint64
	at                time.Time
	election          time.Duration
}

// killLeader SIGKILLs the USERS stream's leader and waits for another node to be named leader.
func killLeader(t *testing.T, sys *rig.System) fault {
	t.Helper()
	ctx := context.Background()
	leader, err := sys.Broker.Leader(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	f := fault{killed: leader, killedAtSeq: lastSeq(sys)}
	f.at = time.Now()
	sys.Broker.Node(leader).Kill()
	if f.newLeader, err = sys.WaitNewLeader(ctx, leader, electionTimeout); err != nil {
		t.Fatal(err)
	}
	f.election = time.Since(f.at)
	return f
}

// wipeAndRejoin removes the killed node's store, starts it again and waits until it holds what the
// stream held when it started and every node is healthy; it adds the times to row, named by who.
func wipeAndRejoin(t *testing.T, sys *rig.System, nd *broker.Node, row *report.Row, who string) {
	t.Helper()
	ctx := context.Background()
	if err := nd.WipeStore(); err != nil {
		t.Fatal(err)
	}
	target := lastSeq(sys)
	start := time.Now()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var got broker.StreamState
	err := rig.Within(healthyTimeout, func() bool {
		st, ok, err := nd.StreamState(ctx, events.StreamName)
		got = st
		return err == nil && ok && st.LastSeq >= target && st.Msgs == st.LastSeq
	})
	if err != nil {
		t.Fatalf("%s did not catch up to seq %d within %s: holds %+v\n%s", who, target, healthyTimeout, got, nd.Log())
	}
	row.Add("catch-up "+who, fmt.Sprintf("%s (%d messages)", time.Since(start).Round(time.Millisecond), target))
	waitHealthy(t, sys)
	row.Add("healthy "+who, time.Since(start))
}

func waitHealthy(t *testing.T, sys *rig.System) {
	t.Helper()
	for _, nd := range sys.Broker.Nodes {
		if err := nd.WaitHealthy(context.Background(), healthyTimeout); err != nil {
			t.Fatal(err)
		}
	}
}

// lastSeq is the highest last sequence of the USERS stream that a running node reports.
func lastSeq(sys *rig.System) uint64 {
	states, _ := sys.NodeStates(context.Background())
	var top uint64
	for _, st := range states {
		top = max(top, st.LastSeq)
	}
	return top
}

// sameStream asserts that, the system quiet, the three nodes report the same stream on their own
// /jsz and hold the same messages, each read through a consumer on that node; it returns the
// stream as the first node holds it.
func sameStream(t *testing.T, sys *rig.System, row *report.Row) []rig.Stored {
	t.Helper()
	ctx := context.Background()
	if _, err := sys.WaitSameState(ctx, time.Minute); err != nil {
		t.Error(err)
	}
	states, err := sys.NodeStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nodes: %s", rig.DescribeStates(states))
	nodes := sys.Broker.Nodes
	first, err := sys.ReadStreamOn(ctx, nodes[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	same := 1
	for _, nd := range nodes[1:] {
		evs, err := sys.ReadStreamOn(ctx, nd.Name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := rig.SameContent(first, evs); diff != "" {
			t.Errorf("%s and %s hold different streams: %s", nodes[0].Name, nd.Name, diff)
			continue
		}
		if a, b := states[nd.Name], states[nodes[0].Name]; a.Msgs != b.Msgs || a.FirstSeq != b.FirstSeq || a.LastSeq != b.LastSeq {
			t.Errorf("%s reports %+v, %s %+v", nd.Name, a, nodes[0].Name, b)
			continue
		}
		same++
	}
	row.Add("same stream on nodes", fmt.Sprintf("%d/%d (%d messages)", same, len(nodes), len(first)))
	return first
}
