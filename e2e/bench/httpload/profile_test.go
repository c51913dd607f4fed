package httpload

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// profile is a CPU profile being taken of a service, by its bench build's pprof handler.
type profile struct {
	path string
	done chan error
}

// startProfile starts taking a CPU profile of service for secs seconds, into a file in dir.
func startProfile(ctx context.Context, sys *system, service string, secs int, dir string) *profile {
	p := &profile{path: filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", service, time.Now().UnixNano())), done: make(chan error, 1)}
	go func() {
		p.done <- fetchProfile(ctx, sys.url(service, fmt.Sprintf("/bench/debug/pprof/profile?seconds=%d", secs)), p.path)
	}()
	return p
}

func fetchProfile(ctx context.Context, url, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileParts are the parts of a request whose share of a profile's samples the notes give: the
// functions' cumulative share, so a part includes what it calls.
var profileParts = []struct {
	label string
	fn    *regexp.Regexp
}{
	{"serving HTTP", regexp.MustCompile(`^net/http\.\(\*conn\)\.serve$`)},
	{"authentication (verify and user lookup)", regexp.MustCompile(`/events/auth\.\(\*Authenticator\)\.authenticate$`)},
	{"the token's verify (auth.Verifier)", regexp.MustCompile(`/events/auth\.\(\*Verifier\)\.Verify$`)},
	{"Ed25519", regexp.MustCompile(`^crypto/ed25519\.Verify$`)},
	{"decoding the public key on every verify (ed25519.NewPublicKey)", regexp.MustCompile(`^crypto/internal/fips140/ed25519\.NewPublicKey$`)},
	{"the replica lookup (replica.User)", regexp.MustCompile(`/events/replica\.\(\*Replica\)\.User$`)},
	{"the handler", regexp.MustCompile(`/internal/server\.(addRoutes\.)?handle\w+\.func1$`)},
	{"garbage collection", regexp.MustCompile(`^runtime\.gcBgMarkWorker$`)},
	{"system calls", regexp.MustCompile(`^(syscall\.(Raw)?Syscall6?|internal/runtime/syscall/linux\.Syscall6)$`)},
}

// wait waits for the profile and says where its samples went, as a sentence.
func (p *profile) wait(service string, secs int) (string, error) {
	if err := <-p.done; err != nil {
		return "", err
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=1000", "-symbolize=none", p.path).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s: %w", p.path, err)
	}
	cum := cumShares(string(out))
	var parts []string
	for _, part := range profileParts {
		found, most := false, 0.0
		for fn, share := range cum {
			if part.fn.MatchString(fn) {
				found, most = true, max(most, share)
			}
		}
		if found {
			parts = append(parts, fmt.Sprintf("%s %.0f %%", part.label, most))
		}
	}
	return fmt.Sprintf("%s's CPU profile over %d s of this load, share of the samples by part (each with what it calls): %s.",
		service, secs, strings.Join(parts, ", ")), nil
}

// cumShares reads the cumulative share of every function in the output of go tool pprof -top:
// lines of flat, flat%, sum%, cum, cum% and the function's name.
func cumShares(top string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(top, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[4], "%") {
			continue
		}
		share, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		if err != nil {
			continue
		}
		out[strings.TrimSuffix(strings.Join(f[5:], " "), " (inline)")] = share
	}
	return out
}
