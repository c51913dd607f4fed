package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	tests := map[string]string{
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
	for remote, want := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		if got := clientAddress(r); got != want {
			t.Errorf("clientAddress(%q) = %q, want %q", remote, got, want)
		}
	}
}
