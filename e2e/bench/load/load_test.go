package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if n.Add(1)%4 == 0 { // every fourth answer is not the one wanted
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	marks := 0
	res, err := Run(context.Background(), Post(srv.URL, http.Header{"Authorization": {"Bearer t"}}, []byte(`{}`)), Options{
		Clients: 3, Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond, Want: http.StatusCreated,
		Mark: func() { marks++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if marks != 2 {
		t.Errorf("Mark called %d times, want 2", marks)
	}
	answered := res.Statuses[http.StatusCreated] + res.Statuses[http.StatusServiceUnavailable]
	if res.OK == 0 || res.OK != res.Statuses[http.StatusCreated] || answered != len(res.Latencies) || len(res.Statuses) != 2 {
		t.Errorf("OK %d, statuses %v, %d latencies: want 201s and 503s, each answer timed", res.OK, res.Statuses, len(res.Latencies))
	}
	if res.Bad() != res.Statuses[http.StatusServiceUnavailable] || res.FirstErr == nil {
		t.Errorf("Bad() = %d, FirstErr = %v; want the 503s, and the first of them", res.Bad(), res.FirstErr)
	}
	if got, want := res.Rate(), float64(res.OK)/0.1; got != want {
		t.Errorf("Rate() = %v, want %v", got, want)
	}
	for i := 1; i < len(res.Latencies); i++ {
		if res.Latencies[i] < res.Latencies[i-1] {
			t.Fatal("latencies not sorted")
		}
	}
}

func TestRunRefusesNoClients(t *testing.T) {
	if _, err := Run(context.Background(), Get("http://127.0.0.1:1", nil), Options{Duration: time.Second}); err == nil {
		t.Error("Run with no clients: no error, want one")
	}
}

func TestProc(t *testing.T) {
	pid := os.Getpid()
	if _, err := CPU(pid); err != nil {
		t.Errorf("CPU(self): %v", err)
	}
	m, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("ReadMemory(self) = %+v, want RSS > 0 and Peak ≥ RSS", m)
	}
	w := WatchRSS(map[string]int{"self": pid}, time.Millisecond)
	got, err := w.Stop()
	if err != nil || got["self"] <= 0 {
		t.Errorf("WatchRSS(self) = %v, %v; want an RSS", got, err)
	}
	if _, err := ReadMemory(-1); err == nil {
		t.Error("ReadMemory(-1): no error, want one")
	}
}
