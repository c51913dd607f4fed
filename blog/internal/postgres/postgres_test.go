package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/blog/internal/blog"
	"github.com/authmesh/blog/internal/blogtest"
	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func ptr[T any](v T) *T { return &v }

func create(t *testing.T, s *postgres.Store, author uuid.UUID, title string) blog.Post {
	t.Helper()
	p, err := s.Create(ctx(t), author, blog.Draft{Title: title, Body: "body of " + title})
	if err != nil {
		t.Fatalf("Create(%q) = %v", title, err)
	}
	return p
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	if err := postgres.Migrate(ctx(t), env.Pool); err != nil {
		t.Fatalf("second Migrate = %v, want nil", err)
	}
}

func TestCreateGet(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	author := env.NewUser(t)

	before := time.Now().Add(-time.Second)
	got, err := env.Store.Create(ctx(t), author.ID, blog.Draft{Title: "  Hello  ", Body: "World\n"})
	if err != nil {
		t.Fatalf("Create = %v", err)
	}
	if got.ID == uuid.Nil || got.CreatedAt.Before(before) || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Errorf("Create = id %s, created %v, updated %v; want an id and both times now", got.ID, got.CreatedAt, got.UpdatedAt)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt location = %v, want UTC", got.CreatedAt.Location())
	}
	want := blog.Post{
		ID: got.ID, AuthorID: author.ID, AuthorName: author.DisplayName,
		Title: "  Hello  ", Body: "World\n", // stored as given
		CreatedAt: got.CreatedAt, UpdatedAt: got.UpdatedAt,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Create mismatch (-want +got):\n%s", diff)
	}
	read, err := env.Store.Post(ctx(t), got.ID)
	if err != nil {
		t.Fatalf("Post = %v", err)
	}
	if diff := cmp.Diff(want, read); diff != "" {
		t.Errorf("Post mismatch (-want +got):\n%s", diff)
	}

	if _, err := env.Store.Post(ctx(t), uuid.New()); !errors.Is(err, blog.ErrNotFound) {
		t.Errorf("Post(unknown) = %v, want ErrNotFound", err)
	}
}

func TestAuthorNameIsReadFromTheReplica(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	author := env.NewUser(t)
	p := create(t, env.Store, author.ID, "named")

	author.DisplayName = "Renamed"
	author.Roles = events.NormalizeRoles([]string{events.RoleModerator})
	author.Version++
	env.Publish(t, events.UserRoleChanged, author)

	got, err := env.Store.Post(ctx(t), p.ID)
	if err != nil {
		t.Fatalf("Post = %v", err)
	}
	if got.AuthorName != "Renamed" {
		t.Errorf("AuthorName = %q, want %q", got.AuthorName, "Renamed")
	}

	// A post whose author the replica does not hold (yet) is still served, without a name.
	orphan := create(t, env.Store, uuid.New(), "orphan")
	got, err = env.Store.Post(ctx(t), orphan.ID)
	if err != nil {
		t.Fatalf("Post(orphan) = %v", err)
	}
	if got.AuthorName != "" {
		t.Errorf("AuthorName of an author unknown to the replica = %q, want empty", got.AuthorName)
	}
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	author := env.NewUser(t)
	p := create(t, env.Store, author.ID, "first")

	got, err := env.Store.Update(ctx(t), p.ID, blog.Patch{Title: ptr("second")})
	if err != nil {
		t.Fatalf("Update(title) = %v", err)
	}
	if got.Title != "second" || got.Body != p.Body || !got.CreatedAt.Equal(p.CreatedAt) || got.UpdatedAt.Before(p.UpdatedAt) {
		t.Errorf("Update(title) = %+v, want the new title and the rest kept", got)
	}
	got, err = env.Store.Update(ctx(t), p.ID, blog.Patch{Body: ptr("new body")})
	if err != nil {
		t.Fatalf("Update(body) = %v", err)
	}
	if got.Title != "second" || got.Body != "new body" || got.AuthorName != author.DisplayName {
		t.Errorf("Update(body) = %+v, want title kept, body changed, author named", got)
	}
	read, err := env.Store.Post(ctx(t), p.ID)
	if err != nil {
		t.Fatalf("Post = %v", err)
	}
	if diff := cmp.Diff(got, read); diff != "" {
		t.Errorf("Post after Update mismatch (-update +read):\n%s", diff)
	}

	if _, err := env.Store.Update(ctx(t), uuid.New(), blog.Patch{Title: ptr("x")}); !errors.Is(err, blog.ErrNotFound) {
		t.Errorf("Update(unknown) = %v, want ErrNotFound", err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	author := env.NewUser(t)
	p := create(t, env.Store, author.ID, "doomed")
	keep := create(t, env.Store, author.ID, "kept")

	if err := env.Store.Delete(ctx(t), p.ID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if _, err := env.Store.Post(ctx(t), p.ID); !errors.Is(err, blog.ErrNotFound) {
		t.Errorf("Post after Delete = %v, want ErrNotFound", err)
	}
	if err := env.Store.Delete(ctx(t), p.ID); !errors.Is(err, blog.ErrNotFound) {
		t.Errorf("Delete again = %v, want ErrNotFound", err)
	}
	if _, err := env.Store.Post(ctx(t), keep.ID); err != nil {
		t.Errorf("Post(other post) after Delete = %v, want it kept", err)
	}
}

// listAll reads every page of q and returns the ids in order and the number of pages.
func listAll(t *testing.T, s *postgres.Store, q blog.Query) ([]uuid.UUID, int) {
	t.Helper()
	var ids []uuid.UUID
	for pages := 1; ; pages++ {
		page, err := s.List(ctx(t), q)
		if err != nil {
			t.Fatalf("List(%+v) = %v", q, err)
		}
		if len(page.Posts) > q.Limit {
			t.Fatalf("List(limit %d) gave %d posts", q.Limit, len(page.Posts))
		}
		for _, p := range page.Posts {
			ids = append(ids, p.ID)
		}
		if page.Next == nil {
			return ids, pages
		}
		if pages > 100 {
			t.Fatal("List never reached the last page")
		}
		q.After = page.Next
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	alice, bob := uuid.New(), uuid.New()
	var all, alices []blog.Post
	for i := range 7 {
		author := bob
		if i%2 == 0 {
			author = alice
		}
		p := create(t, env.Store, author, "post")
		all = append(all, p)
		if author == alice {
			alices = append(alices, p)
		}
	}
	// Newest first: created_at descending, then id descending.
	newest := func(posts []blog.Post) []uuid.UUID {
		s := slices.Clone(posts)
		slices.SortFunc(s, func(a, b blog.Post) int {
			if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
				return c
			}
			return slices.Compare(b.ID[:], a.ID[:])
		})
		ids := make([]uuid.UUID, len(s))
		for i, p := range s {
			ids[i] = p.ID
		}
		return ids
	}

	tests := []struct {
		name      string
		query     blog.Query
		want      []uuid.UUID
		wantPages int
	}{
		{"all in one page", blog.Query{Limit: 20}, newest(all), 1},
		{"pages of 3", blog.Query{Limit: 3}, newest(all), 3},
		{"pages of 1", blog.Query{Limit: 1}, newest(all), 7},
		{"page size equal to the count", blog.Query{Limit: 7}, newest(all), 1},
		{"by author", blog.Query{AuthorID: alice, Limit: 3}, newest(alices), 2},
		{"author without posts", blog.Query{AuthorID: uuid.New(), Limit: 5}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pages := listAll(t, env.Store, tt.query)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("List(%+v) ids mismatch (-want +got):\n%s", tt.query, diff)
			}
			if pages != tt.wantPages {
				t.Errorf("List(%+v) took %d pages, want %d", tt.query, pages, tt.wantPages)
			}
		})
	}

	// A cursor stays valid when the post it names is deleted, and new posts do not shift pages.
	first, err := env.Store.List(ctx(t), blog.Query{Limit: 2})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if err := env.Store.Delete(ctx(t), first.Posts[1].ID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	create(t, env.Store, alice, "newer")
	rest, _ := listAll(t, env.Store, blog.Query{Limit: 2, After: first.Next})
	if diff := cmp.Diff(newest(all)[2:], rest); diff != "" {
		t.Errorf("pages after a deleted cursor post mismatch (-want +got):\n%s", diff)
	}
}

// textOf returns a body of exactly n bytes (n >= 1), mostly four-byte characters, so that bytes
// and characters differ.
func textOf(n int) string {
	return strings.Repeat("😀", n/4) + strings.Repeat("x", n%4)
}

// size is what a post costs a page: the bytes of its title and body.
func size(p blog.Post) int64 { return int64(len(p.Title) + len(p.Body)) }

// pagesOf reads every page of q.
func pagesOf(t *testing.T, s *postgres.Store, q blog.Query) [][]blog.Post {
	t.Helper()
	var pages [][]blog.Post
	for {
		page, err := s.List(ctx(t), q)
		if err != nil {
			t.Fatalf("List(%+v) = %v", q, err)
		}
		pages = append(pages, page.Posts)
		if page.Next == nil {
			return pages
		}
		if len(pages) > 200 {
			t.Fatal("List never reached the last page")
		}
		q.After = page.Next
	}
}

// idsOf returns the ids of the posts of pages.
func idsOf(pages [][]blog.Post) [][]uuid.UUID {
	ids := make([][]uuid.UUID, len(pages))
	for i, page := range pages {
		for _, p := range page {
			ids[i] = append(ids[i], p.ID)
		}
	}
	return ids
}

// wantPages cuts posts (newest first) into pages as List should: as many posts as fit in limit
// and budget, and at least one.
func wantPages(posts []blog.Post, limit int, budget int64) [][]blog.Post {
	var pages [][]blog.Post
	var page []blog.Post
	var bytes int64
	for _, p := range posts {
		if len(page) > 0 && (len(page) == limit || bytes+size(p) > budget) {
			pages = append(pages, page)
			page, bytes = nil, 0
		}
		page = append(page, p)
		bytes += size(p)
	}
	return append(pages, page) // an empty list is one empty page
}

func TestListByteBudget(t *testing.T) {
	t.Parallel()
	env := blogtest.New(t)
	alice, bob := uuid.New(), uuid.New()

	const budget = 1000
	store := postgres.New(env.Pool)
	store.SetPageBytes(budget)
	// Sizes (title of 1 byte + body) around the budget: a post alone over it, posts that fill it
	// exactly, one byte over it, and runs of small posts.
	sizes := []int{1500, 300, 300, 400, 2, 999, 500, 501, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50,
		2000, 2000, 100, 1000, 2, 2, 998, 1000}
	var posts, alices []blog.Post // newest first
	for i, n := range sizes {
		author := bob
		if i%3 == 0 {
			author = alice
		}
		p, err := store.Create(ctx(t), author, blog.Draft{Title: "t", Body: textOf(n - 1)})
		if err != nil {
			t.Fatalf("Create(%d bytes) = %v", n, err)
		}
		posts = append([]blog.Post{p}, posts...)
		if author == alice {
			alices = append([]blog.Post{p}, alices...)
		}
	}

	tests := []struct {
		name   string
		query  blog.Query
		posts  []blog.Post
		budget int64
	}{
		{"limit 100", blog.Query{Limit: 100}, posts, budget},
		{"limit 3", blog.Query{Limit: 3}, posts, budget},
		{"limit 1", blog.Query{Limit: 1}, posts, budget},
		{"by author", blog.Query{AuthorID: alice, Limit: 4}, alices, budget},
		{"from a cursor", blog.Query{Limit: 5, After: ptr(posts[3].Cursor())}, posts[4:], budget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pagesOf(t, store, tt.query)
			if diff := cmp.Diff(wantPages(tt.posts, tt.query.Limit, tt.budget), got); diff != "" {
				t.Errorf("pages mismatch (-want +got):\n%s", diff)
			}
		})
	}

	// The real budget: the largest posts (100,000 four-byte characters) come two to a page.
	big := postgres.New(env.Pool)
	author := uuid.New()
	var largest []blog.Post
	for range 5 {
		p, err := big.Create(ctx(t), author, blog.Draft{Title: "big", Body: strings.Repeat("😀", blog.MaxBody)})
		if err != nil {
			t.Fatalf("Create = %v", err)
		}
		largest = append([]blog.Post{p}, largest...)
	}
	got := idsOf(pagesOf(t, big, blog.Query{AuthorID: author, Limit: 100}))
	if diff := cmp.Diff(idsOf(wantPages(largest, 100, postgres.PageBytes)), got); diff != "" {
		t.Errorf("pages of the largest posts mismatch (-want +got):\n%s", diff)
	}
	if len(got) != 3 {
		t.Errorf("5 of the largest posts took %d pages, want 3 (two to a page)", len(got))
	}
}
