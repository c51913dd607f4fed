package server

import (
	"testing"

	"github.com/authmesh/events/servicetest"
)

// FuzzDecodeRequests: every request body of blog, whatever its bytes, decodes into a valid
// request or gets a 4xx problem; never a panic or a 5xx.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"title":"Hello","body":"World"}`, `{"title":""}`, `{"title":"a","body":null}`,
		`{"title":"` + "\u0000" + `","body":"x"}`, `{"title":"a","title":"b"}`, `{"Title":"a"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		servicetest.CheckDecode(t, &createPostRequest{}, body)
		servicetest.CheckDecode(t, &updatePostRequest{}, body)
	})
}
