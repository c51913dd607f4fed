package apivalidate

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/authmesh/e2e/apitest"
)

// TestValidatorCatchesDrift: a document that differs from the code in one place fails real
// exchanges with the running account, naming the difference, where the document in the
// repository passes them: the validation can fail.
func TestValidatorCatchesDrift(t *testing.T) {
	s := live(t)
	acc := s.URL["account"]
	u := newUser(t, acc, "Drift")
	me := capture(t, func() { call(t, "GET", acc+"/v1/users/me", u.Token, "", 200) })
	register := capture(t, func() {
		call(t, "POST", acc+"/v1/users", "", `{"email":"x`+u.Email+`","password":"twenty-two characters!","display_name":"X"}`, 201)
	})
	taken := capture(t, func() {
		call(t, "POST", acc+"/v1/users", "", `{"email":"`+u.Email+`","password":"long enough","display_name":"X"}`, 409)
	})
	anonymous := capture(t, func() { call(t, "GET", acc+"/v1/users/me", "", "", 401) })
	document := capture(t, func() { call(t, "GET", acc+"/openapi.json", "", "", 200) })

	user := func(d map[string]any) map[string]any { return at(d, "components", "schemas", "User") }
	cases := []struct {
		name   string
		ex     apitest.Exchange
		change func(doc map[string]any)
		want   string
	}{
		{"a field of another type", me, func(d map[string]any) {
			at(user(d), "properties")["version"] = map[string]any{"type": "string"}
		}, `"/version"`},
		{"a field the answer lacks", me, func(d map[string]any) {
			at(user(d), "properties")["nickname"] = map[string]any{"type": "string"}
			user(d)["required"] = append(user(d)["required"].([]any), "nickname")
		}, "nickname"},
		{"a field the document lacks", me, func(d map[string]any) {
			delete(at(user(d), "properties"), "display_name")
			user(d)["required"] = []any{"id"}
		}, "display_name"},
		{"a header the answer lacks", anonymous, func(d map[string]any) {
			at(d, "components", "responses", "Unauthenticated", "headers")["X-Missing"] = map[string]any{
				"required": true, "schema": map[string]any{"type": "string"}}
		}, "X-Missing"},
		{"a constraint the code lacks", register, func(d map[string]any) {
			at(d, "components", "schemas", "Registration", "properties", "password")["minLength"] = 100
		}, "the service accepted a request the document refuses"},
		{"a security requirement the code lacks", document, func(d map[string]any) {
			at(d, "paths", "/openapi.json", "get")["security"] = []any{map[string]any{"bearerAuth": []any{}}}
		}, "the service accepted a request the document refuses"},
		{"another error code", taken, func(d map[string]any) {
			problem := at(d, "paths", "/v1/users", "post", "responses", "409", "content", "application/problem+json", "schema")
			problem["allOf"].([]any)[1].(map[string]any)["properties"].(map[string]any)["code"] = map[string]any{"enum": []any{"last_admin"}}
		}, "/code"},
		{"an undocumented status", taken, func(d map[string]any) {
			delete(at(d, "paths", "/v1/users", "post", "responses"), "409")
		}, "status is not supported"},
		{"an undocumented route", document, func(d map[string]any) {
			delete(at(d, "paths"), "/openapi.json")
		}, "no operation of the document matches"},
	}
	original := readDocument(t, "account")
	good, err := New(Document{Service: "account", URL: acc, JSON: original})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := good.Check(c.ex); err != nil {
				t.Fatalf("the document of the repository: %v", err)
			}
			var doc map[string]any
			if err := json.Unmarshal(original, &doc); err != nil {
				t.Fatal(err)
			}
			c.change(doc)
			changed, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			bad, err := New(Document{Service: "account", URL: acc, JSON: changed})
			if err != nil {
				t.Fatalf("the changed document: %v", err)
			}
			err = bad.Check(c.ex)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("the changed document: Check = %v, want an error with %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

// capture returns the one exchange that f makes through apitest.
func capture(t *testing.T, f func()) apitest.Exchange {
	t.Helper()
	var (
		mu  sync.Mutex
		got []apitest.Exchange
	)
	restore := apitest.SetObserver(func(_ testing.TB, ex apitest.Exchange) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ex)
	})
	f()
	restore()
	if len(got) != 1 {
		t.Fatalf("%d exchanges, want 1", len(got))
	}
	return got[0]
}

// at returns the object at the keys of a JSON document, failing (a panic: the test's own bug)
// when there is none.
func at(v map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		v = v[k].(map[string]any)
	}
	return v
}
