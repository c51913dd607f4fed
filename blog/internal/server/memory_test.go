package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/blog/internal/blog"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// heapBytes returns the bytes of the heap's objects, live or not yet collected. Unlike
// runtime.ReadMemStats it does not stop the world, so it can be sampled every few milliseconds.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// peakHeapGrowth runs f while sampling the heap every 2 ms and returns the highest growth seen
// over the heap before f, after a collection.
func peakHeapGrowth(f func()) uint64 {
	runtime.GC()
	base := heapBytes()
	var peak uint64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, heapBytes())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-stopped
	if peak < base {
		return 0
	}
	return peak - base
}

// TestListMemoryIsBounded: 30 anonymous clients each asking for a page of the 100 largest posts
// must not cost the blog a page's worth of escaped JSON each. The posts are written to escape
// badly: "<" and "&" become six bytes in JSON, U+2028 (three bytes) too. Encoded whole, one page
// would be about 55 MB of JSON on top of 22 MB of text; the blog reads at most postgres.PageBytes
// of text per page and encodes one post at a time.
//
// It runs alone (not in parallel), so that the heap it measures is its own.
func TestListMemoryIsBounded(t *testing.T) {
	f := newFixture(t)
	author := f.env.NewUser(t)
	body := strings.Repeat("<&\u2028😀", blog.MaxBody/4)
	title := strings.Repeat("<", blog.MaxTitle)
	var want []uuid.UUID // newest first
	for i := range 100 {
		p, err := f.env.Store.Create(t.Context(), author.ID, blog.Draft{Title: title, Body: body})
		if err != nil {
			t.Fatalf("Create(post %d) = %v", i, err)
		}
		want = append([]uuid.UUID{p.ID}, want...)
	}

	// Every post is served, once, newest first, and as it was written; one post alone is whole.
	var got []uuid.UUID
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > len(want) {
			t.Fatal("GET /v1/posts never reached the last page")
		}
		r := f.do(t, "GET", "/v1/posts?limit=100&cursor="+cursor, "", "")
		if r.Status != http.StatusOK {
			t.Fatalf("GET /v1/posts = %d %.200s", r.Status, r.Body)
		}
		var page listJSON
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if len(page.Items) == 0 && page.NextCursor != "" {
			t.Fatalf("page %d is empty but has a next_cursor", pages)
		}
		for _, p := range page.Items {
			if p.Title != title || p.Body != body || p.AuthorName != author.DisplayName {
				t.Fatalf("post %s of page %d differs from what was written", p.ID, pages)
			}
			got = append(got, p.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("posts across pages mismatch (-want +got):\n%s", diff)
	}
	one := wantPost(t, f.do(t, "GET", "/v1/posts/"+want[0].String(), "", ""), http.StatusOK)
	if one.Title != title || one.Body != body {
		t.Errorf("GET /v1/posts/{id} does not give the post as written")
	}

	const clients = 30
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, clients)
	growth := peakHeapGrowth(func() {
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() { errs <- getDiscard(ctx, f.url+"/v1/posts?limit=100") })
		}
		wg.Wait()
	})
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each request may hold a page of text (under 1 MiB here: 4 posts of 225 KB) and one post
	// encoded twice (550 KB of JSON, in encoding/json's pool and in the copy it returns), and the
	// collector lets garbage grow as much again: under 150 MB for 30 even if all ran at once.
	// Measured on 2 cores: about 20 MiB. Before the page budget and the item-by-item encoding,
	// each request held 100 posts of text and the whole page encoded: 5.7 GB measured.
	const bound = 256 << 20
	t.Logf("peak heap growth of %d concurrent GET /v1/posts?limit=100: %.1f MiB", clients, float64(growth)/(1<<20))
	if growth > bound {
		t.Errorf("peak heap growth of %d concurrent pages = %.1f MiB, want at most %d MiB", clients, float64(growth)/(1<<20), bound>>20)
	}
}

// getDiscard sends GET url and reads the answer into nothing.
func getDiscard(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: read: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s = %d, want 200", url, resp.StatusCode)
	}
	return nil
}
