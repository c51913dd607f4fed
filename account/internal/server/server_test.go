package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/password"
)

func TestWriteError(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"not found", fmt.Errorf("get: %w", account.ErrNotFound), 404, "not_found", ""},
		{"email taken", account.ErrEmailTaken, 409, "email_taken", ""},
		{"last admin", fmt.Errorf("change: %w", account.ErrLastAdmin), 409, "last_admin", ""},
		{"hashing busy", password.ErrBusy, 503, "unavailable", "2"},
		{"database down", fmt.Errorf("x: %w: boom", account.ErrUnavailable), 503, "unavailable", "2"},
		{"anything else", errors.New("pq: relation users does not exist"), 500, "internal", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeError(w, httptest.NewRequest("GET", "/", nil), log, tt.err)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), `"code":"`+tt.code+`"`) {
				t.Errorf("writeError(%v) = %d %s, want %d with code %s", tt.err, w.Code, w.Body, tt.status, tt.code)
			}
			if got := w.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if strings.Contains(w.Body.String(), "relation") {
				t.Errorf("the 500 reveals the error: %s", w.Body)
			}
		})
	}
	// A client that went away gets no 500 and no error log.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	writeError(w, httptest.NewRequest("GET", "/", nil).WithContext(ctx), log, context.Canceled)
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("cancelled request: status %d, want 503", w.Code)
	}
}

func TestClientAddress(t *testing.T) {
	t.Parallel()
	// Without trusted proxies the connection's address is the client's, whatever the header says.
	keys := map[string]string{
		"192.0.2.1:5555":               "192.0.2.1",
		"[::ffff:192.0.2.1]:5555":      "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:80":    "2001:db8:1:2::/64",
		"not-an-address":               "not-an-address",
		"[fe80::1%eth0]:80":            "fe80::/64",
		"198.51.100.7:1":               "198.51.100.7",
		"[2001:db8:1:3::1]:80":         "2001:db8:1:3::/64",
		"[2001:db8:1:2:aaaa::bbbb]:80": "2001:db8:1:2::/64",
	}
	for remote, want := range keys {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		if got := clientAddress(r, nil); got != want {
			t.Errorf("clientAddress(%q) = %q, want %q", remote, got, want)
		}
	}
}

func TestClientAddressBehindProxies(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ff::/48")}
	tests := []struct {
		name   string
		remote string
		xff    []string // one value per header line
		want   string
	}{
		{"untrusted connection: header ignored", "192.0.2.1:80", []string{"203.0.113.9"}, "192.0.2.1"},
		{"trusted proxy, one hop", "10.0.0.1:80", []string{"203.0.113.9"}, "203.0.113.9"},
		{"trusted proxy, no header", "10.0.0.1:80", nil, "10.0.0.1"},
		{"spoofed entries left of the client are ignored", "10.0.0.1:80", []string{"198.51.100.1, 198.51.100.2, 203.0.113.9"}, "203.0.113.9"},
		{"chain of trusted proxies", "10.0.0.1:80", []string{"198.51.100.1, 203.0.113.9, 10.1.1.1, 10.2.2.2"}, "203.0.113.9"},
		{"several header lines, in order", "10.0.0.1:80", []string{"198.51.100.1", "203.0.113.9, 10.1.1.1"}, "203.0.113.9"},
		{"all trusted: the leftmost", "10.0.0.1:80", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"malformed entry on the way", "10.0.0.1:80", []string{"203.0.113.9, bogus"}, "10.0.0.1"},
		{"empty entry on the way", "10.0.0.1:80", []string{"203.0.113.9, "}, "10.0.0.1"},
		{"malformed entry left of the client is never read", "10.0.0.1:80", []string{"bogus, 203.0.113.9"}, "203.0.113.9"},
		{"entry with a port", "10.0.0.1:80", []string{"203.0.113.9:4711"}, "203.0.113.9"},
		{"IPv6 client by its /64", "10.0.0.1:80", []string{"2001:db8:1:2::99"}, "2001:db8:1:2::/64"},
		{"bracketed IPv6 with a port", "10.0.0.1:80", []string{"[2001:db8:1:2::99]:443"}, "2001:db8:1:2::/64"},
		{"IPv4-mapped client", "10.0.0.1:80", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"IPv4-mapped proxy connection", "[::ffff:10.0.0.1]:80", []string{"203.0.113.9"}, "203.0.113.9"},
		{"IPv6 trusted proxy", "[2001:db8:ff::1]:80", []string{"203.0.113.9, 2001:db8:ff:1::2"}, "203.0.113.9"},
		{"IPv6 outside the trusted prefix", "[2001:db8:fe::1]:80", []string{"203.0.113.9"}, "2001:db8:fe::/64"},
		{"trusted proxy with a zone", "[2001:db8:ff::1%eth0]:80", []string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddress(r, trusted); got != tt.want {
				t.Errorf("clientAddress(%s, X-Forwarded-For %q) = %q, want %q", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

// TestHandlerWithoutRequire: a protected handler reached without the authenticator (a wiring
// bug, which Require rules out) answers a 500 internal, as every service does, and changes nothing.
func TestHandlerWithoutRequire(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, h := range map[string]http.Handler{
		"me":         handleMe(log, nil),
		"get user":   handleGetUser(log, nil),
		"set roles":  handleSetRoles(log, nil),
		"set status": handleSetStatus(log, nil),
	} {
		r := httptest.NewRequest("PUT", "/", strings.NewReader(`{"roles":["user"],"status":"active"}`))
		r.Header.Set("Content-Type", "application/json")
		r.SetPathValue("id", "01a23305-e4ec-7eae-a6cc-ae7bc0edcb4e")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r) // a nil store: reaching it would panic
		if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `"code":"internal"`) {
			t.Errorf("%s without Require = %d %s, want 500 internal", name, w.Code, w.Body)
		}
	}
}
