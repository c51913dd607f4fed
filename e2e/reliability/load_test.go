package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/bench/load"
	"github.com/authmesh/e2e/reliability/rig"
	"github.com/google/uuid"
)

// orderTimeout bounds an order or a login of a burst: far above what one takes, so that the
// latencies of a burst are measured rather than cut at the workload's 5 s.
const orderTimeout = time.Minute

// L01: more buyers than units, all at once. The stock is taken by one conditional UPDATE per
// product (shop/internal/postgres/orders.go), so exactly the stock is sold and the rest refused.
func TestStockContention(t *testing.T) {
	stock, buyers, users := size(20, 100), size(100, 1000), size(10, 50)
	row := newRow(t, "L01", "stock contention: more buyers than units, all at once",
		fmt.Sprintf("stock %d; %d buyers each order quantity 1, released together by one gate, with the tokens of %d users "+
			"(each token shared by %d concurrent buyers; logins cost an argon2id hash)", stock, buyers, users, buyers/users),
		fmt.Sprintf("exactly %d answers 201 and %d 409 out_of_stock problem+json; final stock 0 (GET and shop's database), never below 0; "+
			"oversold 0; deadlocks 0; 5xx 0", stock, buyers-stock))
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := t.Context()
	cs := w.Customers(ctx, users, 2)
	product := w.NewProduct(ctx, "L01 last units", 1999, int64(stock))
	deadlocks0, retries0 := contention(t, sys, w)

	watch := watchStock(ctx, sys, product)
	answers := make([]rig.Answer, buyers)
	atOnce(buyers, func(i int) {
		answers[i] = w.Exchange(ctx, rig.Request{Service: "shop", Method: http.MethodPost, Path: "/v1/orders",
			Token: cs[i%users].Token, Body: order(product), Timeout: orderTimeout})
	})
	lowest, reads, readErr := watch()

	var accepted, refused int
	var others []string
	took := make([]time.Duration, 0, buyers)
	for _, a := range answers {
		took = append(took, a.Took)
		switch code, _ := problemCode(a); {
		case a.Status == http.StatusCreated:
			accepted++
		case a.Status == http.StatusConflict && code == "out_of_stock":
			refused++
		default:
			others = append(others, describe(a))
		}
	}
	got, err := w.Stock(ctx, product)
	if err != nil {
		t.Fatal(err)
	}
	_, retries1 := contention(t, sys, w)
	w.CloseIdleConnections()
	if err := sys.StopSessions("shop"); err != nil {
		t.Fatal(err)
	}
	deadlocks1, err := sys.Deadlocks(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sys.ShopStock(ctx, product)
	if err != nil {
		t.Fatal(err)
	}
	oversold := max(0, accepted-stock, int(db.Sold)-stock)
	lat := rig.QuantilesOf(took)

	row.Add("accepted", accepted)
	row.Add("refused (409 out_of_stock)", refused)
	row.Add("other answers", len(others))
	row.Add("oversold", oversold)
	row.Add("final stock GET/database", fmt.Sprintf("%d/%d", got, db.Stock))
	row.Add("lowest stock seen", fmt.Sprintf("%d in %d reads of the database", lowest, reads))
	row.Add("deadlocks", deadlocks1-deadlocks0)
	row.Add("retries (40001/40P01)", retries1-retries0)
	row.Add("5xx", w.Count(500, 599))
	row.Add("latency p50/p99/max", lat)

	if accepted != stock || refused != buyers-stock || len(others) > 0 {
		t.Errorf("accepted %d, refused %d, other %d, want %d, %d, 0; others e.g. %v", accepted, refused, len(others), stock, buyers-stock, first(others, 3))
	}
	if oversold != 0 || got != 0 || db.Stock != 0 || db.Stock+db.Sold != int64(stock) {
		t.Errorf("oversold %d; final stock %d (GET), %d (database), sold %d; want 0, 0, 0, %d", oversold, got, db.Stock, db.Sold, stock)
	}
	if lowest < 0 || readErr != nil {
		t.Errorf("lowest stock read %d, want >= 0 (read error: %v)", lowest, readErr)
	}
	if d := deadlocks1 - deadlocks0; d != 0 {
		t.Errorf("%d deadlocks in shop's database, want 0", d)
	}
	checkNoBad(t, w)
}

// L03: orders of the same two products listed in opposite orders. The store locks the products
// in id order whatever the order of the items, so no two orders wait for each other in a cycle.
func TestOppositeOrders(t *testing.T) {
	n, users := size(60, 500), size(10, 50)
	stockA, stockB := n, n*4/5 // B runs out: the orders after it roll back what they took of A
	row := newRow(t, "L03", "opposite lock orders: {A,B} and {B,A} at once",
		fmt.Sprintf("products A (stock %d) and B (stock %d); %d orders of 1 A + 1 B at once, half listing A first and half B first, "+
			"with the tokens of %d users", stockA, stockB, n, users),
		fmt.Sprintf("deadlocks 0; retries 0; %d orders 201, %d 409 out_of_stock; per product stock + sold = initial; 5xx 0", stockB, n-stockB))
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := t.Context()
	cs := w.Customers(ctx, users, 2)
	a := w.NewProduct(ctx, "L03 A", 700, int64(stockA))
	b := w.NewProduct(ctx, "L03 B", 300, int64(stockB))
	deadlocks0, retries0 := contention(t, sys, w)

	answers := make([]rig.Answer, n)
	atOnce(n, func(i int) {
		items := []map[string]any{{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 1}}
		if i%2 == 1 {
			slices.Reverse(items)
		}
		answers[i] = w.Exchange(ctx, rig.Request{Service: "shop", Method: http.MethodPost, Path: "/v1/orders",
			Token: cs[i%users].Token, Body: map[string]any{"items": items}, Timeout: orderTimeout})
	})
	var accepted, refused int
	var others []string
	took := make([]time.Duration, 0, n)
	for _, an := range answers {
		took = append(took, an.Took)
		switch code, _ := problemCode(an); {
		case an.Status == http.StatusCreated:
			accepted++
		case an.Status == http.StatusConflict && code == "out_of_stock":
			refused++
		default:
			others = append(others, describe(an))
		}
	}
	_, retries1 := contention(t, sys, w)
	w.CloseIdleConnections()
	if err := sys.StopSessions("shop"); err != nil {
		t.Fatal(err)
	}
	deadlocks1, err := sys.Deadlocks(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	dbA, err := sys.ShopStock(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	dbB, err := sys.ShopStock(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	violations := 0
	for _, c := range []struct {
		st      rig.Stock
		initial int
	}{{dbA, stockA}, {dbB, stockB}} {
		if c.st.Stock+c.st.Sold != int64(c.initial) || c.st.Sold != int64(accepted) || c.st.Stock < 0 {
			violations++
		}
	}

	row.Add("accepted", accepted)
	row.Add("refused (409 out_of_stock)", refused)
	row.Add("other answers", len(others))
	row.Add("A stock + sold", fmt.Sprintf("%d + %d of %d", dbA.Stock, dbA.Sold, stockA))
	row.Add("B stock + sold", fmt.Sprintf("%d + %d of %d", dbB.Stock, dbB.Sold, stockB))
	row.Add("invariant violations", violations)
	row.Add("deadlocks", deadlocks1-deadlocks0)
	row.Add("retries (40001/40P01)", retries1-retries0)
	row.Add("5xx", w.Count(500, 599))
	row.Add("latency p50/p99/max", rig.QuantilesOf(took))

	if accepted != stockB || refused != n-stockB || len(others) > 0 {
		t.Errorf("accepted %d, refused %d, other %d, want %d, %d, 0; others e.g. %v", accepted, refused, len(others), stockB, n-stockB, first(others, 3))
	}
	if violations > 0 {
		t.Errorf("stock + sold: A %d + %d (initial %d), B %d + %d (initial %d), accepted %d", dbA.Stock, dbA.Sold, stockA, dbB.Stock, dbB.Sold, stockB, accepted)
	}
	if d, r := deadlocks1-deadlocks0, retries1-retries0; d != 0 || r != 0 {
		t.Errorf("deadlocks %d, retries %v, want 0, 0", d, r)
	}
	checkNoBad(t, w)
}

// L04: one Idempotency-Key sent many times at once with the same body. The requests queue on the
// key (the first claims it in its transaction, the others wait for its commit and then read the
// order it placed): so there is no 409 while one is in flight; every answer is the 201 of the
// order, the replays marked Idempotent-Replayed.
func TestIdempotencyKeyBurst(t *testing.T) {
	const n = 50
	row := newRow(t, "L04", "one Idempotency-Key sent 50 times at once",
		fmt.Sprintf("%d orders of 2 units with the same Idempotency-Key and body by one user, released together by one gate; "+
			"then the key once more with another quantity", n),
		"orders created 1; every answer 201 with the same body (shop queues a request on a key in flight: no 409); "+
			"all but one marked Idempotent-Replayed: true; the other body → 422 idempotency_key_reused, no order")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := t.Context()
	c := w.Customers(ctx, 1, 1)[0]
	product := w.NewProduct(ctx, "L04 once", 1250, 100)
	key := http.Header{"Idempotency-Key": {"l04-" + uuid.NewString()}}
	place := func(quantity int) rig.Answer {
		return w.Exchange(ctx, rig.Request{Service: "shop", Method: http.MethodPost, Path: "/v1/orders", Token: c.Token,
			Header: key, Body: map[string]any{"items": []map[string]any{{"product_id": product, "quantity": quantity}}},
			Timeout: orderTimeout})
	}

	answers := make([]rig.Answer, n)
	atOnce(n, func(i int) { answers[i] = place(2) })
	statuses := map[int]int{}
	bodies := map[string]int{}
	var firsts, replays int
	var others []string
	for _, a := range answers {
		statuses[a.Status]++
		if a.Status != http.StatusCreated {
			others = append(others, describe(a))
			continue
		}
		bodies[string(a.Body)]++
		switch r := a.Header.Values("Idempotent-Replayed"); {
		case len(r) == 0:
			firsts++
		case len(r) == 1 && r[0] == "true":
			replays++
		default:
			others = append(others, fmt.Sprintf("201 with Idempotent-Replayed %q", r))
		}
	}
	orders0 := ordersOf(t, sys, c.ID)
	reuse := place(3)
	reuseCode, why := problemCode(reuse)
	orders1 := ordersOf(t, sys, c.ID)
	st, err := sys.ShopStock(ctx, product)
	if err != nil {
		t.Fatal(err)
	}

	row.Add("requests", n)
	row.Add("answers by status", statusList(statuses))
	row.Add("orders created", orders0)
	row.Add("first answers", firsts)
	row.Add("replayed", replays)
	row.Add("distinct bodies", len(bodies))
	row.Add("409 in flight", statuses[http.StatusConflict])
	row.Add("other body", fmt.Sprintf("%d %s", reuse.Status, reuseCode))
	row.Add("orders after it", orders1-orders0)
	row.Add("stock taken", 100-st.Stock)
	row.Add("5xx", w.Count(500, 599))

	if orders0 != 1 || st.Stock != 98 {
		t.Errorf("%d orders, stock %d, want 1 order and stock 98", orders0, st.Stock)
	}
	if statuses[http.StatusCreated] != n || firsts != 1 || replays != n-1 || len(bodies) != 1 || len(others) > 0 {
		t.Errorf("statuses %v, first answers %d, replays %d, distinct bodies %d, want %d×201, 1, %d, 1; others e.g. %v",
			statuses, firsts, replays, len(bodies), n, n-1, first(others, 3))
	}
	if reuse.Status != http.StatusUnprocessableEntity || reuseCode != "idempotency_key_reused" || orders1 != orders0 {
		t.Errorf("the key with another body: %d %q (%s), %d orders more; want 422 idempotency_key_reused, none", reuse.Status, reuseCode, why, orders1-orders0)
	}
	checkNoBad(t, w)
}

// L08: a storm of logins, each an argon2id hash of 19 MiB. account's Hasher runs at most
// GOMAXPROCS hashes at once and turns away (503 with Retry-After) a login that waits 2 s for a
// slot, so its memory stays bounded whatever the burst, and no login waits long.
//
// A slow check: a smaller storm on this machine's two slots stays under the bound even with no
// hasher at all (10 logins peaked at 74 MiB unbounded), so only the full one can fail.
func TestLoginStorm(t *testing.T) {
	slow(t)
	const n = 200
	slots := runtime.GOMAXPROCS(0) // account's, run on this machine with this environment
	row := newRow(t, "L08", "a storm of concurrent logins (argon2id)",
		fmt.Sprintf("%d users log in at once with the right password, released by one gate, each from an address of its own "+
			"(X-Forwarded-For; account trusts 127.0.0.1/32 as its proxy) so that no throttle applies and every one reaches the hasher; "+
			"account's RSS sampled every 10 ms", n),
		fmt.Sprintf("only 200, 429 and 503 (429 and 503 with Retry-After), no other 5xx, every login answered; largest RSS ≤ its size before the storm + %d hashing slots × "+
			"the argon2 memory + 40 MiB", slots))
	sys := newSystem(t, rig.Options{Env: []string{"TRUSTED_PROXIES=127.0.0.1/32"}})
	w := sys.NewWorkload()
	ctx := t.Context()
	users := w.RegisterMany(ctx, n, 2)
	argonMiB := argonMemory(t, sys, users[0].Email)
	pid := sys.PID("account")
	time.Sleep(1500 * time.Millisecond) // past account's release of its hashes' memory (a second idle)
	before, err := load.ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	// What the storm may add to what account held before it (its registrations, its pools): the
	// hashes in its slots and 40 MiB for 200 requests in flight. A hasher without its bound adds
	// some 200 MiB.
	bound := load.MiB(before.RSS) + float64(slots)*argonMiB + 40

	rss := load.WatchRSS(map[string]int{"account": pid}, 10*time.Millisecond)
	answers := make([]rig.Answer, n)
	atOnce(n, func(i int) {
		answers[i] = w.Exchange(ctx, rig.Request{Service: "account", Method: http.MethodPost, Path: "/v1/tokens",
			Header:  http.Header{"X-Forwarded-For": {fmt.Sprintf("10.8.%d.%d", i/250, i%250+1)}},
			Body:    map[string]string{"email": users[i].Email, "password": rig.Password},
			Timeout: orderTimeout})
	})
	peaks, err := rss.Stop()
	if err != nil {
		t.Fatal(err)
	}
	after, err := load.ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}

	statuses := map[int]int{}
	var others []string
	took := make([]time.Duration, 0, n)
	for _, a := range answers {
		statuses[a.Status]++
		took = append(took, a.Took)
		switch a.Status {
		case http.StatusOK:
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if a.Header.Get("Retry-After") == "" {
				others = append(others, fmt.Sprintf("%d without Retry-After", a.Status))
			}
		default:
			others = append(others, describe(a))
		}
	}
	lat := rig.QuantilesOf(took)
	peak := load.MiB(peaks["account"])

	row.Add("logins", n)
	row.Add("answers by status", statusList(statuses))
	row.Add("other answers", len(others))
	row.Add("RSS before", fmt.Sprintf("%.1f MiB", load.MiB(before.RSS)))
	row.Add("RSS peak in the storm", fmt.Sprintf("%.1f MiB", peak))
	row.Add("VmHWM (since start)", fmt.Sprintf("%.1f MiB", load.MiB(after.Peak)))
	row.Add("bound", fmt.Sprintf("%.0f MiB (%.1f + %d × %.0f + 40)", bound, load.MiB(before.RSS), slots, argonMiB))
	row.Add("latency p50/p99/max", lat)

	if len(others) > 0 || statuses[http.StatusOK] == 0 {
		t.Errorf("answers %v; want only 200, 429 and 503 with Retry-After, some 200; others e.g. %v", statuses, first(others, 3))
	}
	if peak > bound || load.MiB(after.Peak) > bound {
		t.Errorf("account's RSS peaked at %.1f MiB in the storm, %.1f MiB since start; want ≤ %.0f MiB", peak, load.MiB(after.Peak), bound)
	}
	checkNoBad(t, w)
}

// atOnce runs f(0) … f(n-1) each on a goroutine of its own, released together by one gate once
// every goroutine is waiting at it, and returns when all have returned.
func atOnce(n int, f func(i int)) {
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(n)
	for i := range n {
		done.Go(func() {
			ready.Done()
			<-gate
			f(i)
		})
	}
	ready.Wait()
	close(gate)
	done.Wait()
}

// order is the body of an order of one unit of product.
func order(product uuid.UUID) map[string]any {
	return map[string]any{"items": []map[string]any{{"product_id": product, "quantity": 1}}}
}

// watchStock reads a product's stock in shop's database every 2 ms (beside shop's own pool, so
// that the reads do not queue behind the load) until the returned stop is called; stop returns
// the lowest stock read, the number of reads and the first error.
func watchStock(ctx context.Context, sys *rig.System, product uuid.UUID) (stop func() (lowest int64, reads int, err error)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	lowest, reads := int64(1<<62), 0
	var firstErr error
	wg.Go(func() {
		for {
			var st int64
			err := sys.Pool("shop").QueryRow(ctx, `SELECT stock FROM products WHERE id = $1`, product).Scan(&st)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil {
				lowest, reads = min(lowest, st), reads+1
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return func() (int64, int, error) {
		close(done)
		wg.Wait()
		return lowest, reads, firstErr
	}
}

// contention reads the deadlocks counted in shop's database and shop's count of transactions
// retried after a deadlock or a serialization failure.
func contention(t *testing.T, sys *rig.System, w *rig.Workload) (deadlocks int64, retries float64) {
	t.Helper()
	d, err := sys.Deadlocks(t.Context(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.Metric(t.Context(), "shop", "shop_transaction_retries_total")
	if err != nil {
		t.Fatal(err)
	}
	return d, r
}

// ordersOf counts the orders of a user in shop's database.
func ordersOf(t *testing.T, sys *rig.System, user uuid.UUID) int {
	t.Helper()
	var n int
	if err := sys.Pool("shop").QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE user_id = $1`, user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// argonMemory reads the argon2id memory, in MiB, of the password hash account stored for email:
// the parameter account really uses.
func argonMemory(t *testing.T, sys *rig.System, email string) float64 {
	t.Helper()
	var phc string
	err := sys.Pool("account").QueryRow(t.Context(), `SELECT password_hash FROM users WHERE lower(email) = lower($1)`, email).Scan(&phc)
	if err != nil {
		t.Fatal(err)
	}
	// $argon2id$v=19$m=19456,t=2,p=1$salt$hash
	parts := strings.Split(phc, "$")
	var m, tm, p int
	if len(parts) != 6 || parts[1] != "argon2id" {
		t.Fatalf("password hash %.20q…: not an argon2id PHC string", phc)
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &tm, &p); err != nil {
		t.Fatalf("password hash parameters %q: %v", parts[3], err)
	}
	return float64(m) / 1024
}

// problemCode returns the code of an answer that is an RFC 9457 problem (Content-Type
// application/problem+json, a body whose status is the answer's); else "" and why it is not one.
func problemCode(a rig.Answer) (code, why string) {
	ct, _, _ := mime.ParseMediaType(a.Header.Get("Content-Type"))
	if ct != "application/problem+json" {
		return "", "Content-Type " + a.Header.Get("Content-Type")
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	if err := json.Unmarshal(a.Body, &p); err != nil {
		return "", "body: " + err.Error()
	}
	if p.Status != a.Status {
		return "", fmt.Sprintf("body status %d, HTTP status %d", p.Status, a.Status)
	}
	return p.Code, ""
}

// describe is one line on an answer, for a failure message.
func describe(a rig.Answer) string {
	if a.Status == 0 {
		return fmt.Sprintf("no answer after %s: %v", a.Took.Round(time.Millisecond), a.Err)
	}
	return fmt.Sprintf("%d %.200s", a.Status, bytes.TrimSpace(a.Body))
}

// statusList prints counts by status in status order: "201×49 409×1".
func statusList(m map[int]int) string {
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d×%d", s, m[s]))
	}
	return strings.Join(parts, " ")
}

// checkNoBad fails the test for every answer no client may get (a 5xx other than a 503 with
// Retry-After, a leak of internals).
func checkNoBad(t *testing.T, w *rig.Workload) {
	t.Helper()
	if bad := w.Bad(); len(bad) > 0 {
		t.Errorf("%d answers no client may get, e.g.:\n%s", len(bad), strings.Join(first(bad, 5), "\n"))
	}
}

func first(ss []string, n int) []string { return ss[:min(len(ss), n)] }
