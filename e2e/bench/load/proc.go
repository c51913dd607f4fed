package load

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, 100 on Linux whatever the
// kernel's own tick rate.
const clockTick = 10 * time.Millisecond

// CPU returns the CPU time, user and system, that process pid has used so far
// (/proc/<pid>/stat, to 10 ms).
func CPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: the fields are counted after its end.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// After the name: state (field 3) ... utime (14), stime (15).
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// Memory is a process's memory from /proc/<pid>/status, in bytes.
type Memory struct {
	RSS  int64 // VmRSS: resident now
	Peak int64 // VmHWM: the most it has been resident since it started
}

// ReadMemory reads the memory of process pid.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: %q", pid, key, val)
		}
		if key == "VmRSS" {
			m.RSS = kib << 10
		} else {
			m.Peak = kib << 10
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if m.RSS == 0 {
		return Memory{}, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}

// MiB converts bytes to mebibytes.
func MiB(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// RSSWatch samples the resident memory of processes on an interval and keeps the largest value
// seen of each: a peak over a stretch of time, which VmHWM (since the start) cannot give.
type RSSWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	max  map[string]int64
	err  error
}

// WatchRSS starts sampling the processes of pids (by name) every interval; Stop ends it.
func WatchRSS(pids map[string]int, every time.Duration) *RSSWatch {
	w := &RSSWatch{stop: make(chan struct{}), done: make(chan struct{}), max: map[string]int64{}}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			w.sample(pids)
			select {
			case <-w.stop:
				w.sample(pids)
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *RSSWatch) sample(pids map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, pid := range pids {
		m, err := ReadMemory(pid)
		if err != nil {
			if w.err == nil {
				w.err = fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		w.max[name] = max(w.max[name], m.RSS)
	}
}

// Stop ends the sampling and returns the largest resident memory seen of each process, in bytes,
// or the first error of a reading.
func (w *RSSWatch) Stop() (map[string]int64, error) {
	close(w.stop)
	<-w.done
	return w.max, w.err
}
