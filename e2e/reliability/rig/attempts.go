package rig

import (
	"context"
	"fmt"
	"net/http"

	"github.com/authmesh/e2e/reliability/checker"
	"github.com/google/uuid"
)

// SetRoles sets the roles of user as the admin, logs the attempt like every change of the
// workload, and returns what the client was told and, when acked, the user's new version. Unlike
// Change, the check chooses the user and the change.
func (w *Workload) SetRoles(ctx context.Context, user uuid.UUID, roles []string) (checker.Outcome, int64) {
	return w.set(ctx, checker.OpRoles, user, "/roles", map[string]any{"roles": roles})
}

// SetStatus sets the status of user as the admin, as SetRoles does.
func (w *Workload) SetStatus(ctx context.Context, user uuid.UUID, status string) (checker.Outcome, int64) {
	return w.set(ctx, checker.OpStatus, user, "/status", map[string]any{"status": status})
}

func (w *Workload) set(ctx context.Context, op checker.Op, user uuid.UUID, path string, body any) (checker.Outcome, int64) {
	a := checker.Attempt{Op: op, User: user}
	var got uuid.UUID
	a.Outcome, got, a.Version = w.send(ctx, "account", http.MethodPut, w.sys.URL["account"]+"/v1/users/"+user.String()+path, w.sys.Admin, body)
	if a.Outcome == checker.Acked && got != user {
		w.mu.Lock()
		w.bad = append(w.bad, fmt.Sprintf("%s of %s answered user %s", op, user, got))
		w.mu.Unlock()
	}
	w.log(a)
	return a.Outcome, a.Version
}

// Record adds to the history an attempt the check made itself, not through the API (a change
// written in account's database by hand, the way account writes it), or through another
// workload. An acked registration joins the users that changes pick from.
func (w *Workload) Record(a checker.Attempt) { w.log(a) }

// Audit adds the audit trigger to service's replica_users again, as Ready does: a rebuild swaps
// in a new table, which the trigger of the old one does not follow. The log itself is kept.
func (s *System) Audit(service string) error { return s.audit(service) }
