package server

import (
	"testing"

	"github.com/authmesh/events/servicetest"
)

// FuzzDecodeRequests: every request body of shop, whatever its bytes, decodes into a valid
// request or gets a 4xx problem; never a panic or a 5xx.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"product_id":"0192f0a0-0000-7000-8000-000000000001","quantity":2}]}`,
		`{"items":[]}`, `{"items":[{"product_id":"x","quantity":0}]}`,
		`{"items":[{"product_id":"0192f0a0-0000-7000-8000-000000000001","quantity":1},{"product_id":"0192f0a0-0000-7000-8000-000000000001","quantity":1}]}`,
		`{"name":"Mug","price_cents":1200,"stock":10}`, `{"name":"","price_cents":0,"stock":-1}`,
		`{"price_cents":9223372036854775807}`, `{"stock":1e3}`, `{"name":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		servicetest.CheckDecode(t, &placeOrderRequest{}, body)
		servicetest.CheckDecode(t, &createProductRequest{}, body)
		servicetest.CheckDecode(t, &productRequest{}, body)
	})
}
