package replica

import (
	"context"

	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// Internals for the tests of package replica_test, which otherwise use the package as a service
// does.

// Apply is apply: the live apply into the replica's table.
var Apply = apply

// Applied is the replica's last applied stream sequence.
var Applied = appliedSeq

// ShadowTable is the copy of the table that a rebuild fills.
const ShadowTable = shadowTable

// Listening reports whether r's listener holds its LISTEN connection.
func (r *Replica) Listening() bool { return r.listening.Load() }

// Waiting returns the number of callers of User waiting for id.
func (r *Replica) Waiting(id uuid.UUID) int {
	r.waiters.mu.Lock()
	defer r.waiters.mu.Unlock()
	return len(r.waiters.byUser[id])
}

// Lookup is lookup.
func Lookup(ctx context.Context, q querier, id uuid.UUID) (u events.User, found, stale bool, err error) {
	return lookup(ctx, q, id)
}

// Result labels of replica_lookups_total.
const (
	ResultCaughtUp = resultCaughtUp
	ResultHit      = resultHit
	ResultLagging  = resultLagging
)
