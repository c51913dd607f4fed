package propagation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// The load runs in a child process, this test binary run again with loadEnv set, so that its
// clients do not share the Go scheduler of the benchmark's process with the NATS server and the
// listeners whose timestamps are measured: a notification read late because a client was running
// would be counted against the system.
const loadEnv = "PROPAGATION_LOAD"

// TestMain runs the load when the process is the child that startLoad started, else the tests.
func TestMain(m *testing.M) {
	if spec := os.Getenv(loadEnv); spec != "" {
		os.Exit(serveLoad(spec))
	}
	os.Exit(m.Run())
}

// loadSpec is what the child is told to do: clients on each service, each sending its requests
// with one of the tokens.
type loadSpec struct {
	BlogURL, ShopURL string
	Clients          int
	Tokens           []string
}

// load is the child process that sends the load.
type load struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errs strings.Builder
}

// startLoad starts the child process with its clients (see serveLoad).
func startLoad(d *driver, clients int, tokens []string) (*load, error) {
	spec, err := json.Marshal(loadSpec{BlogURL: d.serviceURL[blog], ShopURL: d.serviceURL[shop], Clients: clients, Tokens: tokens})
	if err != nil {
		return nil, err
	}
	l := &load{cmd: exec.Command(os.Args[0])}
	l.cmd.Env = append(os.Environ(), loadEnv+"="+string(spec))
	l.cmd.Stderr = &l.errs
	if l.in, err = l.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := l.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	l.out = bufio.NewReader(out)
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the load: %w", err)
	}
	return l, nil
}

// counts returns the requests answered so far, per service.
func (l *load) counts() ([services]int64, error) {
	var n [services]int64
	if _, err := io.WriteString(l.in, "count\n"); err != nil {
		return n, fmt.Errorf("load: %w; %s", err, l.errs.String())
	}
	line, err := l.out.ReadString('\n')
	if err != nil {
		return n, fmt.Errorf("load: %w; %s", err, l.errs.String())
	}
	_, err = fmt.Sscan(line, &n[blog], &n[shop])
	return n, err
}

// close stops the clients and returns what failed, if anything did.
func (l *load) close() error {
	l.in.Close()
	if err := l.cmd.Wait(); err != nil {
		return fmt.Errorf("load: %w; %s", err, l.errs.String())
	}
	return nil
}

// serveLoad is the child process: a closed loop of clients sending authorized requests to blog
// and shop as fast as they are answered (blog's clients write posts, shop's list their orders),
// until stdin closes or a request fails. For each line read on stdin it writes the requests
// answered so far on each service. It returns the exit code.
func serveLoad(spec string) int {
	var s loadSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	requests := [services]struct {
		method, url string
		body        any
		want        int
	}{
		blog: {"POST", s.BlogURL + "/v1/posts", map[string]any{"title": "load", "body": "under load"}, http.StatusCreated},
		shop: {"GET", s.ShopURL + "/v1/orders", nil, http.StatusOK},
	}
	var answered [services]atomic.Int64
	var wg sync.WaitGroup
	for i, r := range requests {
		for c := range s.Clients {
			token := s.Tokens[c%len(s.Tokens)]
			wg.Go(func() {
				for ctx.Err() == nil {
					status, raw, err := call(ctx, r.method, r.url, token, r.body)
					switch {
					case ctx.Err() != nil:
						return
					case err == nil && status != r.want:
						err = fmt.Errorf("%s %s under load: status %d; body %s", r.method, r.url, status, raw)
					}
					if err != nil {
						cancel(err)
						return
					}
					answered[i].Add(1)
				}
			})
		}
	}
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			fmt.Printf("%d %d\n", answered[blog].Load(), answered[shop].Load())
		}
		cancel(nil)
	}()
	<-ctx.Done()
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
