package blackbox

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// TestPosts: a user posts (and may do so at once after registering), edits its own posts, lists
// them newest first page by page; others may not edit or delete them.
func TestPosts(t *testing.T) {
	t.Parallel()
	alice, bob := newUser(t, "Alice"), newUser(t, "Bob")

	var ids []string
	for _, title := range []string{"first", "second", "third"} {
		p := apitest.Call(t, "POST", system.blog+"/v1/posts", alice.Token, map[string]any{"title": title, "body": "Body of " + title}).
			Want(t, http.StatusCreated, "alice posts "+title)
		if p.Str("author_id") != alice.ID || p.Str("author_name") != "Alice" || p.Str("title") != title || p.Str("body") != "Body of "+title {
			t.Fatalf("post = %s, want %q by %s (Alice)", p.Raw, title, alice.ID)
		}
		ids = append(ids, p.Str("id"))
	}
	got := apitest.Call(t, "GET", system.blog+"/v1/posts/"+ids[0], "", nil).Want(t, http.StatusOK, "anyone reads a post")
	if got.Str("title") != "first" || got.Str("created_at") == "" || got.Str("updated_at") == "" {
		t.Errorf("post = %s", got.Raw)
	}

	// Alice's posts, newest first, two per page.
	var listed []string
	next := system.blog + "/v1/posts?limit=2&author_id=" + alice.ID
	for pages := 0; next != ""; pages++ {
		if pages > 3 {
			t.Fatalf("more pages than posts: %v", listed)
		}
		page := apitest.Call(t, "GET", next, "", nil).Want(t, http.StatusOK, "list alice's posts")
		for _, it := range page.Items() {
			listed = append(listed, it["id"].(string))
		}
		next = ""
		if c := page.Str("next_cursor"); c != "" {
			next = system.blog + "/v1/posts?limit=2&author_id=" + alice.ID + "&cursor=" + url.QueryEscape(c)
		}
	}
	if want := []string{ids[2], ids[1], ids[0]}; len(listed) != 3 || listed[0] != want[0] || listed[1] != want[1] || listed[2] != want[2] {
		t.Errorf("alice's posts = %v, want newest first %v", listed, want)
	}
	if all := apitest.Call(t, "GET", system.blog+"/v1/posts", "", nil).Want(t, http.StatusOK, "list posts"); len(all.Items()) == 0 {
		t.Errorf("the list of every post is empty after alice posted")
	}

	edited := apitest.Call(t, "PATCH", system.blog+"/v1/posts/"+ids[0], alice.Token, map[string]any{"title": "First, edited"}).
		Want(t, http.StatusOK, "alice edits her post")
	if edited.Str("title") != "First, edited" || edited.Str("body") != "Body of first" {
		t.Errorf("edited post = %s, want the new title and the old body", edited.Raw)
	}
	apitest.Call(t, "PATCH", system.blog+"/v1/posts/"+ids[0], bob.Token, map[string]any{"title": "Bob was here"}).
		WantProblem(t, http.StatusForbidden, "forbidden", "bob edits alice's post")
	apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+ids[0], bob.Token, nil).
		WantProblem(t, http.StatusForbidden, "forbidden", "bob deletes alice's post")
	apitest.Call(t, "POST", system.blog+"/v1/posts", "", map[string]any{"title": "x", "body": "y"}).
		WantProblem(t, http.StatusUnauthorized, "unauthenticated", "post without a token")

	apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+ids[0], alice.Token, nil).Want(t, http.StatusNoContent, "alice deletes her post")
	apitest.Call(t, "GET", system.blog+"/v1/posts/"+ids[0], "", nil).WantProblem(t, http.StatusNotFound, "not_found", "read a deleted post")
	apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+ids[0], alice.Token, nil).WantProblem(t, http.StatusNotFound, "not_found", "delete it again")
	apitest.Call(t, "GET", system.blog+"/v1/posts/"+uuid.NewString(), "", nil).WantProblem(t, http.StatusNotFound, "not_found", "read an unknown post")

	// An admin may delete anyone's post.
	apitest.Call(t, "DELETE", system.blog+"/v1/posts/"+ids[1], admin(t), nil).Want(t, http.StatusNoContent, "the admin deletes alice's post")
}
