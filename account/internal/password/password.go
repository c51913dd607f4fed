// Package password hashes and verifies passwords with argon2id, stored as PHC strings:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with the salt and hash in unpadded standard base64. A Hasher bounds how many hashes run at once,
// because each one takes Memory KiB: without a bound, a burst of logins would exhaust memory.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// Parameters of new hashes (OWASP's argon2id recommendation).
const (
	Memory  = 19456 // KiB
	Time    = 2
	Threads = 1
	SaltLen = 16
	KeyLen  = 32
)

// Dummy is a valid hash of a random password that nobody knows. Verifying a password against it
// costs as much as verifying against a real hash, so a login for an unknown email takes as long
// as one with a wrong password.
const Dummy = "$argon2id$v=19$m=19456,t=2,p=1$shZqTo8Eptr9xAGca41L7g$uN2AWwLqShbewNSs9jksVWOq3gNd7n5EFRvoCsAOugo"

// ErrMalformed is returned by Verify for a string that is not an argon2id PHC string with sane
// parameters.
var ErrMalformed = errors.New("malformed password hash")

var b64 = base64.RawStdEncoding

// Hash returns the PHC string of password with a fresh random salt. It never truncates or
// normalises the password.
func Hash(password string) (string, error) {
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, Time, Memory, Threads, KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, Memory, Time, Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify reports whether password matches the PHC string encoded, in constant time. It uses the
// parameters recorded in encoded, so hashes made with older parameters still verify. It returns
// ErrMalformed for a string it cannot use.
func Verify(password, encoded string) (bool, error) {
	p, err := parse(encoded)
	if err != nil {
		return false, err
	}
	return p.verify(password), nil
}

// verify reports whether password hashes to p's key, in constant time.
func (p params) verify(password string) bool {
	key := argon2.IDKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1
}

type params struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

// parse reads a PHC string, refusing parameters far outside what this package writes so that a
// corrupt row cannot make one verification take minutes or gigabytes.
func parse(encoded string) (params, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return params{}, ErrMalformed
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return params{}, fmt.Errorf("%w: version %q", ErrMalformed, parts[2])
	}
	var p params
	var m, t, th uint64
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &th); err != nil {
		return params{}, fmt.Errorf("%w: parameters %q", ErrMalformed, parts[3])
	}
	if m < 8 || m > 1<<20 || t < 1 || t > 16 || th < 1 || th > 16 {
		return params{}, fmt.Errorf("%w: parameters %q out of range", ErrMalformed, parts[3])
	}
	p.memory, p.time, p.threads = uint32(m), uint32(t), uint8(th)
	var err error
	if p.salt, err = b64.DecodeString(parts[4]); err != nil || len(p.salt) < 8 || len(p.salt) > 64 {
		return params{}, fmt.Errorf("%w: salt", ErrMalformed)
	}
	if p.key, err = b64.DecodeString(parts[5]); err != nil || len(p.key) < 16 || len(p.key) > 64 {
		return params{}, fmt.Errorf("%w: hash", ErrMalformed)
	}
	return p, nil
}

// ErrBusy is returned by a Hasher when no hashing slot freed up within its wait.
var ErrBusy = errors.New("password hashing is saturated")

// DefaultWait is how long a Hasher waits for a slot by default.
const DefaultWait = 2 * time.Second

// ReleaseAfter is how long a Hasher stays idle, after it has hashed, before it hands the
// memory of its hashes back to the operating system.
const ReleaseAfter = time.Second

// Hasher runs Hash and Verify at most a fixed number at a time, which bounds their memory. It is
// safe for concurrent use.
//
// Each hash allocates Memory KiB at once, in one array that is garbage the moment the hash ends.
// Left to itself, the garbage collector lets such garbage pile up to as much as was live at its
// last cycle (GOGC=100) before it reclaims any, and the arrays of a burst of logins double the
// process. So a hash collects the garbage before it gives its slot up: there is never more than
// one array per slot, and the next hash reuses the memory of the last (the arrays hold no
// pointers, so a cycle costs a millisecond or two beside a hash's tens). The runtime also keeps
// what it has reclaimed, for reuse, so after a burst the process would stay as large as at its
// height until long after: once no hash has run for ReleaseAfter, the hasher returns the free
// memory to the operating system (debug.FreeOSMemory, once per burst, not per hash, so steady
// logins keep theirs).
type Hasher struct {
	slots chan struct{}
	wait  time.Duration
	runs  atomic.Uint64
	mu    sync.Mutex  // over idle's Reset, from the goroutines giving slots back
	idle  *time.Timer // fires ReleaseAfter after the last slot was given back
}

// NewHasher returns a hasher running at most n hashes at once (GOMAXPROCS when n < 1) and waiting
// at most wait for a slot (DefaultWait when wait <= 0).
func NewHasher(n int, wait time.Duration) *Hasher {
	if n < 1 {
		n = runtime.GOMAXPROCS(0)
	}
	if wait <= 0 {
		wait = DefaultWait
	}
	h := &Hasher{slots: make(chan struct{}, n), wait: wait}
	h.idle = time.AfterFunc(time.Hour, h.freeIfIdle)
	h.idle.Stop()
	return h
}

// freeIfIdle returns the free memory to the operating system unless a hash is running.
func (h *Hasher) freeIfIdle() {
	if len(h.slots) == 0 {
		debug.FreeOSMemory()
	}
}

// Hash is Hash run in a slot. It returns ErrBusy when no slot freed up in time, or ctx's error.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	h.runs.Add(1)
	return Hash(password)
}

// Verify is Verify run in a slot. It returns ErrBusy when no slot freed up in time, or ctx's
// error.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (bool, error) {
	p, err := parse(encoded)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	h.runs.Add(1)
	return p.verify(password), nil
}

// Runs returns how many times Hash or Verify has run in a slot of h: the hashes it computed.
func (h *Hasher) Runs() uint64 { return h.runs.Load() }

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(h.wait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release collects the garbage (see Hasher) and gives the slot back; the last one out starts the
// wait before the memory is returned to the operating system.
func (h *Hasher) release() {
	runtime.GC()
	<-h.slots
	if len(h.slots) == 0 {
		h.mu.Lock()
		h.idle.Reset(ReleaseAfter)
		h.mu.Unlock()
	}
}
