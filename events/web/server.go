package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/authmesh/events/logging"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Timeouts of every server.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 15 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 16 << 10
	// ShutdownTimeout bounds how long in-flight requests may take to finish after a stop.
	ShutdownTimeout = 25 * time.Second
)

// NewServer returns an http.Server for h with the timeouts above, logging its own errors to log.
func NewServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Listen opens the server's address, so that a caller learns of a taken port before it starts
// anything else, and learns the port chosen for ":0".
func Listen(srv *http.Server) (net.Listener, error) {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", srv.Addr, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx is done, then stops accepting and lets in-flight requests finish
// within ShutdownTimeout. It returns nil after a clean stop.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Check reports whether a dependency is reachable.
type Check func(ctx context.Context) error

// HandleHealth registers GET /healthz (200 while the process runs) and GET /readyz (200 when every
// check passes within two seconds, else 503 naming what is down).
func HandleHealth(mux *http.ServeMux, checks map[string]Check) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		Encode(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status := map[string]string{}
		var down []string
		for name, check := range checks {
			if err := check(ctx); err != nil {
				status[name] = "down"
				down = append(down, name)
				continue
			}
			status[name] = "up"
		}
		if len(down) > 0 {
			slices.Sort(down)
			Unavailable(fmt.Sprintf("not ready: %v down", down), 5*time.Second).Write(w)
			return
		}
		Encode(w, http.StatusOK, status)
	})
}

// HandleMetrics registers GET /metrics serving the given registry.
func HandleMetrics(mux *http.ServeMux, reg *prometheus.Registry) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

// Handler wraps a service's mux with what every request gets: a request id (the client's
// X-Request-Id, up to 128 bytes, else a new one; sent back, and put in the request's context for
// the lines it logs, see events/logging), panic recovery, problem+json answers for unknown routes
// and methods, request metrics in reg, and an access line in log once the request is done.
func Handler(mux *http.ServeMux, log *slog.Logger, reg *prometheus.Registry) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "HTTP request latency by route pattern.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	reg.MustRegister(requests, duration)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 128 {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		ctx := logging.WithRequestID(r.Context(), id)
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		// The mux itself serves a routed request: only ServeMux.ServeHTTP sets r.PathValue.
		var h http.Handler = mux
		_, pattern := mux.Handler(r)
		if pattern == "" {
			h = unrouted(mux)
			pattern = "unrouted"
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.ErrorContext(ctx, "panic", "method", r.Method, "path", r.URL.Path, "request_id", id, "panic", v, "stack", string(debug.Stack()))
				if sw.status == 0 {
					Internal().Write(sw)
				}
			}
			took := time.Since(start)
			requests.WithLabelValues(pattern, r.Method, strconv.Itoa(sw.code())).Inc()
			duration.WithLabelValues(pattern).Observe(took.Seconds())
			logAccess(ctx, log, r, pattern, sw, took)
		}()
		h.ServeHTTP(sw, r)
	})
}

// quietRoutes are the routes of probes and scrapes, whose access lines are logged at debug: at
// info they would flood the log with a line every few seconds.
var quietRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

// logAccess logs the access line of a request that is done: one line a request, at info (debug
// for quietRoutes), with the route pattern as well as the path, the status and bytes sent, the
// duration, the connection's address, the request id, and the user once authenticated.
func logAccess(ctx context.Context, log *slog.Logger, r *http.Request, route string, sw *statusWriter, took time.Duration) {
	level := slog.LevelInfo
	if quietRoutes[route] {
		level = slog.LevelDebug
	}
	if !log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.String("path", r.URL.Path),
		slog.Int("status", sw.code()),
		slog.Int64("bytes", sw.bytes),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
		slog.String("remote_addr", r.RemoteAddr),
		// Named here too, so that the line is whole whatever handler log has; events/logging adds
		// neither a second time.
		slog.String(logging.RequestIDKey, logging.RequestID(ctx)),
	}
	if uid := logging.UserID(ctx); uid != "" {
		attrs = append(attrs, slog.String(logging.UserIDKey, uid))
	}
	log.LogAttrs(ctx, level, "request", attrs...)
}

// unrouted turns the mux's plain-text 404 and 405 into problems, keeping its Allow header.
func unrouted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &captureWriter{header: http.Header{}}
		h.ServeHTTP(c, r)
		if allow := c.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		switch c.status {
		case http.StatusMethodNotAllowed:
			WriteProblem(w, c.status, CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed here", r.Method))
		default:
			WriteProblem(w, http.StatusNotFound, CodeNotFound, "no such resource")
		}
	})
}

type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header         { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) { return len(b), nil }
func (c *captureWriter) WriteHeader(code int)        { c.status = code }

// statusWriter records the status a handler sent, and the bytes of the body.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
