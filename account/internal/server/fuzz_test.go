package server

import (
	"testing"

	"github.com/authmesh/events/servicetest"
)

// FuzzDecodeRequests: every request body of account, whatever its bytes, decodes into a valid
// request or gets a 4xx problem; never a panic or a 5xx.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"email":"a@example.com","password":"correct horse battery","display_name":"A"}`,
		`{"email":"a@example.com","password":"correct horse battery"}`,
		`{"roles":["user","admin"]}`, `{"roles":["root"]}`, `{"roles":null}`,
		`{"status":"disabled"}`, `{"status":"gone"}`,
		`{"email":"A@EXAMPLE.COM ","password":""}`, `{"email":"a@example.com","email":"b@example.com"}`,
		`{"password":"` + "\u0000" + `"}`, `{"display_name":"` + "\u202e" + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		servicetest.CheckDecode(t, &registerRequest{}, body)
		servicetest.CheckDecode(t, &loginRequest{}, body)
		servicetest.CheckDecode(t, &rolesRequest{}, body)
		servicetest.CheckDecode(t, &statusRequest{}, body)
	})
}
