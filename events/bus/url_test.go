package bus_test

import (
	"strings"
	"testing"

	"github.com/authmesh/events/bus"
	"github.com/nats-io/nats.go"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		servers string
		user    string // what the option sets: "user:password", "token", or "" for none
		wantErr string
	}{
		{"plain", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222", "", ""},
		{"user and password", "nats://blog:pw@nats:4222", "nats://nats:4222", "blog:pw", ""},
		{"token", "nats://t0ken@nats:4222", "nats://nats:4222", "t0ken", ""},
		{"cluster, credentials on the first", "nats://blog:pw@a:4222, nats://b:4222,nats://c:4222",
			"nats://a:4222,nats://b:4222,nats://c:4222", "blog:pw", ""},
		{"cluster, the same on every URL", "nats://blog:pw@a:4222,nats://blog:pw@b:4222", "nats://a:4222,nats://b:4222", "blog:pw", ""},
		{"escaped password", "nats://blog:p%40ss@a:4222", "nats://a:4222", "blog:p@ss", ""},
		{"different credentials", "nats://blog:pw@a:4222,nats://shop:pw@b:4222", "", "", "different credentials"},
		{"not a URL", "nats://blog:pw@a:4222,::", "", "", "URL 2"},
		{"no host", "blog", "", "", "URL 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servers, auth, err := bus.ParseURL(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "pw") {
					t.Fatalf("ParseURL(%q) = %v, want an error with %q that quotes no password", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil || servers != tt.servers {
				t.Fatalf("ParseURL(%q) = %q, %v; want %q", tt.raw, servers, err, tt.servers)
			}
			var o nats.Options
			for _, opt := range auth {
				if err := opt(&o); err != nil {
					t.Fatal(err)
				}
			}
			got := o.Token
			if o.User != "" {
				got = o.User + ":" + o.Password
			}
			if got != tt.user {
				t.Errorf("ParseURL(%q) credentials = %q, want %q", tt.raw, got, tt.user)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"nats://127.0.0.1:4222":                         "nats://127.0.0.1:4222",
		"nats://blog:s3cret@nats:4222":                  "nats://blog:redacted@nats:4222",
		"nats://t0ken@nats:4222,nats://blog:s3cret@b:1": "nats://redacted@nats:4222,nats://blog:redacted@b:1",
		"::": "(unparsable)",
	} {
		if got := bus.Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
}
