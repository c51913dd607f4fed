package propagation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Services whose enforcement is timed, in the order of the arrays indexed by service.
const (
	blog = iota
	shop
	services
)

var serviceNames = [services]string{"blog", "shop"}

// enforceTimeout bounds the wait for a change to be enforced.
const enforceTimeout = 10 * time.Second

// user is a user whose roles the admin changes. A change grants admin to a user and the next one
// revokes it, so that blog and shop both answer its requests differently after each change.
type user struct {
	id uuid.UUID
	// token was issued before any change; only the users whose changes are probed have one.
	token string
	// admin says whether the last change granted admin.
	admin bool
}

// change is one change of a user's roles, and what the benchmark saw of it.
type change struct {
	user    *user
	grant   bool  // admin granted; else revoked
	version int64 // the user's version after it, from the PUT's answer

	sent, answered time.Time // the PUT was sent, its answer received
	// Per service: when its NOTIFY was read, and when its apply transaction began.
	notified, applied [services]time.Time
	// probe is what requests with the user's old token saw, on the probed changes.
	probe [services]*probe

	// From account's outbox and the stream, filled in after the runs: the outbox row's
	// created_at (account's transaction began), and the message's sequence and timestamp in the
	// stream.
	created, stored time.Time
	seq             uint64

	err error
}

// took is the time from the PUT's answer to the enforcement on service i.
func (c *change) took(i int) time.Duration { return c.notified[i].Sub(c.answered) }

// probe is what the requests of a probe saw.
type probe struct {
	requests int
	// reflected is when the first answer that reflects the change arrived.
	reflected time.Time
	// lastStale is when the last request whose answer did not reflect it was sent (zero: none).
	lastStale time.Time
}

// driver changes roles through account's API and observes their enforcement.
type driver struct {
	accountURL, adminToken string
	serviceURL             [services]string
	obs                    [services]*observer
	// free holds the users without a change in flight: a user's next change waits until its
	// last one is enforced everywhere, so each notification belongs to one change.
	free chan *user
	// posts are posts by author; a blog probe of a grant deletes one (only a moderator or an
	// admin may delete another's post).
	posts  chan uuid.UUID
	author uuid.UUID
}

// run makes n changes at rate changes per second, each with the next free user, and returns them
// once all are enforced, with the rate achieved.
func (d *driver) run(ctx context.Context, n, rate int) ([]*change, float64, error) {
	interval := time.Second / time.Duration(rate)
	out := make([]*change, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		var u *user
		select {
		case u = <-d.free:
		case <-time.After(enforceTimeout):
			wg.Wait()
			return nil, 0, errors.New("no user free for the next change")
		}
		wg.Go(func() {
			out[i] = d.change(ctx, u)
			d.free <- u
		})
	}
	elapsed := time.Since(start)
	wg.Wait()
	var errs []error
	for _, c := range out {
		errs = append(errs, c.err)
	}
	return out, float64(n-1) / elapsed.Seconds(), errors.Join(errs...)
}

// change grants or revokes admin for u, then waits for both services to enforce it and reads
// when their apply transactions began. A user with a token is probed meanwhile.
func (d *driver) change(ctx context.Context, u *user) *change {
	c := &change{user: u, grant: !u.admin}
	var notified [services]<-chan time.Time
	for i, o := range d.obs {
		notified[i] = o.expect(u.id)
		defer o.forget(u.id)
	}
	roles := []string{"user"}
	if c.grant {
		roles = append(roles, "admin")
	}
	c.sent = time.Now()
	status, raw, err := call(ctx, "PUT", d.accountURL+"/v1/users/"+u.id.String()+"/roles", d.adminToken,
		map[string]any{"roles": roles})
	c.answered = time.Now()
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d; body %s", status, raw)
	}
	var answer struct {
		Version int64 `json:"version"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &answer)
	}
	if err != nil {
		c.err = fmt.Errorf("change roles of %s: %w", u.id, err)
		return c
	}
	c.version = answer.Version
	u.admin = c.grant

	var probes sync.WaitGroup
	perr := make([]error, services)
	if u.token != "" {
		for i, ask := range d.probes(c) {
			if ask != nil {
				probes.Go(func() { c.probe[i], perr[i] = poll(ctx, ask) })
			}
		}
	}
	errs := []error{}
	for i, o := range d.obs {
		select {
		case c.notified[i] = <-notified[i]:
		case <-time.After(enforceTimeout):
			errs = append(errs, fmt.Errorf("%s: change %d of %s not applied within %s", o.service, c.version, u.id, enforceTimeout))
			continue
		}
		version, began, err := o.row(ctx, u.id)
		switch {
		case err != nil:
			errs = append(errs, err)
		case version != c.version:
			errs = append(errs, fmt.Errorf("%s: replica holds version %d of %s after its notification, want %d", o.service, version, u.id, c.version))
		}
		c.applied[i] = began
	}
	probes.Wait()
	c.err = errors.Join(append(errs, perr...)...)
	return c
}

// probes returns, for each service, the request that tells whether it enforces c, nil when it
// has none: on shop, listing the author's orders (an admin may, a user may not); on blog,
// deleting a post of the author's when c grants admin (a revocation would cost a post per
// answer that still honoured it).
func (d *driver) probes(c *change) [services]func(context.Context) (bool, error) {
	var asks [services]func(context.Context) (bool, error)
	token := c.user.token
	orders := d.serviceURL[shop] + "/v1/orders?user_id=" + d.author.String()
	asks[shop] = func(ctx context.Context) (bool, error) {
		status, raw, err := call(ctx, "GET", orders, token, nil)
		switch {
		case err != nil:
			return false, err
		case status != http.StatusOK && status != http.StatusForbidden:
			return false, fmt.Errorf("shop probe: status %d; body %s", status, raw)
		}
		return (status == http.StatusOK) == c.grant, nil
	}
	if !c.grant {
		return asks
	}
	var post uuid.UUID
	select {
	case post = <-d.posts:
	default:
		return asks // none left
	}
	target := d.serviceURL[blog] + "/v1/posts/" + post.String()
	asks[blog] = func(ctx context.Context) (bool, error) {
		status, raw, err := call(ctx, "DELETE", target, token, nil)
		switch {
		case err != nil:
			return false, err
		case status != http.StatusNoContent && status != http.StatusForbidden:
			return false, fmt.Errorf("blog probe: status %d; body %s", status, raw)
		}
		return status == http.StatusNoContent, nil
	}
	return asks
}

// poll asks until an answer reflects the change, for at most enforceTimeout.
func poll(ctx context.Context, ask func(context.Context) (bool, error)) (*probe, error) {
	p := &probe{}
	deadline := time.Now().Add(enforceTimeout)
	for time.Now().Before(deadline) {
		sent := time.Now()
		ok, err := ask(ctx)
		p.requests++
		if err != nil {
			return nil, err
		}
		if ok {
			p.reflected = time.Now()
			return p, nil
		}
		p.lastStale = sent
	}
	return nil, fmt.Errorf("probe: change not reflected within %s (%d requests)", enforceTimeout, p.requests)
}
