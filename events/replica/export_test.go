package replica

import (
	"context"

	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// Internals for the tests of package replica_test (which must be external: authtest imports auth,
// which imports replica).

// Listening reports whether r's listener holds its LISTEN connection.
func (r *Replica) Listening() bool { return r.listening.Load() }

// Waiting returns the number of callers of User waiting for id.
func (r *Replica) Waiting(id uuid.UUID) int {
	r.waiters.mu.Lock()
	defer r.waiters.mu.Unlock()
	return len(r.waiters.byUser[id])
}

// Lookup is lookup.
func Lookup(ctx context.Context, q Querier, id uuid.UUID) (u events.User, found, stale bool, err error) {
	return lookup(ctx, q, id)
}

// Result labels of replica_lookups_total.
const (
	ResultCaughtUp = resultCaughtUp
	ResultLagging  = resultLagging
)
