package web_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/authmesh/events/web"
	"github.com/google/uuid"
)

func TestPathID(t *testing.T) {
	id := uuid.New()
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{id.String(), true},
		{"urn:uuid:" + id.String(), false},
		{"{" + id.String() + "}", false},
		{uuid.New().String()[:35], false},
		{"0123456789abcdef0123456789abcdef", false},
		{"nonsense", false},
		{"", false},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetPathValue("id", tt.in)
		got, err := web.PathID(r, "thing")
		var p *web.Problem
		switch {
		case tt.ok && (err != nil || got.String() != tt.in):
			t.Errorf("PathID(%q) = %v, %v; want the id", tt.in, got, err)
		case !tt.ok && (!errors.As(err, &p) || p.Status != http.StatusNotFound || p.Detail != "no such thing"):
			t.Errorf("PathID(%q) = %v, %v; want a 404 no such thing", tt.in, got, err)
		}
	}
}
