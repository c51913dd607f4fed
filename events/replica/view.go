package replica

import (
	"sync"
	"sync/atomic"

	"github.com/authmesh/events"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
)

// DefaultViewSize is Config.ViewSize when zero: how many users the in-memory view holds at most
// (a few hundred bytes each).
const DefaultViewSize = 50_000

// view is the in-memory copy of the users this instance looked up recently, so that an
// authorized request reads a map rather than Postgres. It is only as good as the notifications
// that keep it current: every change of replica_users, made by any instance (applies, dead
// letters, a rebuild's swap), sends a NOTIFY on notifyChannel, and the listener drops the users
// it names (or everyone). So the view is used only while the listener holds its LISTEN
// connection, and is emptied whenever that connection is taken or lost, since notifications sent
// in between are gone.
//
// A lookup that misses reads Postgres and stores what it read, unless a notification arrived
// while it read: the epoch counts the drops, and a store carries the epoch read before the
// query. Without it a slow read of the old row could land after the drop of the change that
// replaced it, and keep a revoked role in the view.
type view struct {
	users *lru.Cache[uuid.UUID, events.User]
	// enabled is true while notifications are certain to reach the listener.
	enabled atomic.Bool
	// mu orders stores after the drops they must not undo.
	mu    sync.Mutex
	epoch atomic.Uint64
	// held are the users of a batch this instance is committing, with the number of batches
	// holding each: none of them is stored until the commit has returned (see hold).
	held map[uuid.UUID]int
}

// newView returns a view of at most size users; nil when size < 1 (no view: every lookup reads
// Postgres).
func newView(size int) *view {
	if size < 1 {
		return nil
	}
	users, err := lru.New[uuid.UUID, events.User](size)
	if err != nil {
		return nil
	}
	return &view{users: users}
}

// get returns the view's copy of user id. The user's Roles are shared with the view: callers
// must not modify them.
func (v *view) get(id uuid.UUID) (events.User, bool) {
	if v == nil || !v.enabled.Load() {
		return events.User{}, false
	}
	return v.users.Get(id)
}

// begin returns the epoch to give store for a read of Postgres that starts now.
func (v *view) begin() uint64 {
	if v == nil {
		return 0
	}
	return v.epoch.Load()
}

// store keeps u, read from Postgres by a read that began at epoch, unless a drop happened since or
// the view already holds a newer version.
func (v *view) store(epoch uint64, u events.User) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.enabled.Load() || v.epoch.Load() != epoch || v.held[u.ID] > 0 {
		return
	}
	if old, ok := v.users.Peek(u.ID); ok && old.Version >= u.Version {
		return
	}
	v.users.Add(u.ID, u)
}

// drop forgets user id: a notification said it changed.
func (v *view) drop(id uuid.UUID) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.epoch.Add(1)
	v.users.Remove(id)
}

// hold forgets the users ids and keeps them out of the view until release: this instance is about
// to commit changes of theirs. From the moment the commit becomes visible to the moment it
// returns, a read of Postgres already gives the new state while the view would still give the
// old one; so while a batch commits, its users are read from Postgres, and this instance never
// answers from the view what its own commit has already replaced. (Other instances learn of the
// change from its NOTIFY.)
func (v *view) hold(ids []uuid.UUID) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.held == nil {
		v.held = make(map[uuid.UUID]int)
	}
	v.epoch.Add(1)
	for _, id := range ids {
		v.held[id]++
		v.users.Remove(id)
	}
}

// release ends a hold of ids, once their commit has returned (or failed), and forgets them once
// more: a read that began during the commit may have read the state before it.
func (v *view) release(ids []uuid.UUID) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.epoch.Add(1)
	for _, id := range ids {
		if v.held[id]--; v.held[id] <= 0 {
			delete(v.held, id)
		}
		v.users.Remove(id)
	}
}

// reset forgets every user and enables or disables the view.
func (v *view) reset(enabled bool) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.epoch.Add(1)
	v.users.Purge()
	v.enabled.Store(enabled)
}
