package reliability

import (
	"context"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/rig"
)

// F01k: the broker is SIGKILLed under load and restarted on its store, three times. Account keeps
// answering (the outbox holds what the broker cannot take), and once it is back every change
// reaches the stream once and both replicas.
func TestBrokerKilled(t *testing.T) {
	row := newRow(t, "F01k", "broker SIGKILLed and restarted under load",
		"registrations, role and status changes from 8 clients; the single nats-server SIGKILLed, restarted 2 s later on its store, 3 times",
		"account answers throughout; lost 0, applied-twice 0, divergence 0; no 500")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, 20, 4) // users to change
	stop := w.Background(ctx, 8)
	nd := sys.Broker.Nodes[0]
	kills := size(1, 3)
	for range kills {
		time.Sleep(time.Duration(size(1, 3)) * time.Second)
		nd.Kill()
		time.Sleep(2 * time.Second)
		if err := nd.Start(ctx); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	stop()
	end := time.Now()
	row.Add("kills", kills)
	sys.Judge(w, row, end, time.Minute)
}
