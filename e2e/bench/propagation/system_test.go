package propagation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/e2e/stack"
	"github.com/google/uuid"
)

// password is the password of every user the benchmark registers.
const password = "correct horse battery"

// client is shared by every request of the benchmark; it keeps enough idle connections for the
// load's clients, so that no request pays for a new connection.
var client = &http.Client{
	Timeout: 10 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
	},
}

// call sends a request with body encoded as JSON (nil: no body) and, unless token is empty, the
// token as a bearer token; it returns the status and the body.
func call(ctx context.Context, method, url, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// callWant is call that fails unless the answer has status want, and decodes the body into out
// (when not nil).
func callWant(ctx context.Context, want int, method, url, token string, body, out any) error {
	status, raw, err := call(ctx, method, url, token, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	if status != want {
		return fmt.Errorf("%s %s: status %d, want %d; body %s", method, url, status, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode %s: %w", method, url, raw, err)
		}
	}
	return nil
}

// register creates a user and returns its id.
func register(ctx context.Context, accountURL, email string) (uuid.UUID, error) {
	var u struct {
		ID uuid.UUID `json:"id"`
	}
	err := callWant(ctx, http.StatusCreated, "POST", accountURL+"/v1/users", "",
		map[string]any{"email": email, "password": password, "display_name": "bench"}, &u)
	return u.ID, err
}

// login returns an access token of the user with email and pass.
func login(ctx context.Context, accountURL, email, pass string) (string, error) {
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err := callWant(ctx, http.StatusOK, "POST", accountURL+"/v1/tokens", "",
		map[string]any{"email": email, "password": pass}, &tok)
	return tok.AccessToken, err
}

// parallel runs do(0) … do(n-1), at most limit at a time, and returns the first error.
func parallel(n, limit int, do func(i int) error) error {
	sem := make(chan struct{}, limit)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = do(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// databaseURL returns the DATABASE_URL of a service of s.
func databaseURL(s *stack.Stack, service string) string {
	for _, kv := range s.Env[service] {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			return v
		}
	}
	return ""
}

// scrape reads the values of the unlabelled series names from a service's /metrics.
func scrape(ctx context.Context, baseURL string, names ...string) (map[string]float64, error) {
	status, raw, err := call(ctx, "GET", baseURL+"/metrics", "", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: status %d", baseURL, status)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(raw)) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				var v float64
				if _, err := fmt.Sscan(value, &v); err == nil {
					out[n] = v
				}
			}
		}
	}
	return out, nil
}
