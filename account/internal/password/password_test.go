package password

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

var phc = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestHashFormat(t *testing.T) {
	t.Parallel()
	h, err := Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !phc.MatchString(h) {
		t.Errorf("Hash() = %q, want a PHC string matching %s", h, phc)
	}
}

func TestHashSaltsDiffer(t *testing.T) {
	t.Parallel()
	a, err := Hash("same password")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Hash("same password")
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("two hashes of one password are equal: %q", a)
	}
	if strings.Split(a, "$")[4] == strings.Split(b, "$")[4] {
		t.Errorf("two hashes share a salt: %q, %q", a, b)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 72)
	tests := []struct {
		name    string
		stored  string // the password hashed
		attempt string
		want    bool
	}{
		{"right", "correct horse", "correct horse", true},
		{"wrong", "correct horse", "correct horsE", false},
		{"empty attempt", "correct horse", "", false},
		{"prefix", "correct horse", "correct", false},
		// bcrypt ignores bytes after the 72nd; argon2id must not.
		{"over 72 bytes, right", long + "tail", long + "tail", true},
		{"over 72 bytes, first 72 only", long + "tail", long, false},
		{"over 72 bytes, other tail", long + "tail", long + "tall", false},
		{"unicode", "pässwörd 密码 🔑", "pässwörd 密码 🔑", true},
		// No normalisation: NFC and NFD forms of "é" are different passwords.
		{"unicode, other normal form", "caf\u00e9-caf\u00e9", "cafe\u0301-cafe\u0301", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := Hash(tt.stored)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Verify(tt.attempt, h)
			if err != nil {
				t.Fatalf("Verify(%q) error: %v", tt.attempt, err)
			}
			if got != tt.want {
				t.Errorf("Verify(%q) against hash of %q = %v, want %v", tt.attempt, tt.stored, got, tt.want)
			}
		})
	}
}

func TestDummyIsValid(t *testing.T) {
	t.Parallel()
	if !phc.MatchString(Dummy) {
		t.Fatalf("Dummy %q has other parameters than new hashes, so its work differs", Dummy)
	}
	ok, err := Verify("", Dummy)
	if err != nil || ok {
		t.Errorf("Verify(\"\", Dummy) = %v, %v; want false, nil", ok, err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	t.Parallel()
	good, err := Hash("password")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	tests := map[string]string{
		"empty":          "",
		"bcrypt":         "$2a$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
		"argon2i":        strings.Replace(good, "argon2id", "argon2i", 1),
		"other version":  strings.Replace(good, "v=19", "v=16", 1),
		"huge memory":    strings.Replace(good, "m=19456", "m=99999999", 1),
		"zero time":      strings.Replace(good, "t=2", "t=0", 1),
		"bad salt":       strings.Join([]string{"", parts[1], parts[2], parts[3], "!!", parts[5]}, "$"),
		"short hash":     strings.Join([]string{"", parts[1], parts[2], parts[3], parts[4], "AAAA"}, "$"),
		"missing fields": strings.Join(parts[:5], "$"),
	}
	for name, enc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Verify("password", enc); !errors.Is(err, ErrMalformed) {
				t.Errorf("Verify(%q) error = %v, want ErrMalformed", enc, err)
			}
		})
	}
}

func TestHasherBusy(t *testing.T) {
	t.Parallel()
	h := NewHasher(1, 50*time.Millisecond)
	ctx := context.Background()
	if err := h.acquire(ctx); err != nil { // hold the only slot
		t.Fatal(err)
	}
	if _, err := h.Hash(ctx, "password"); !errors.Is(err, ErrBusy) {
		t.Errorf("Hash with no free slot: error = %v, want ErrBusy", err)
	}
	if _, err := h.Verify(ctx, "password", Dummy); !errors.Is(err, ErrBusy) {
		t.Errorf("Verify with no free slot: error = %v, want ErrBusy", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NewHasher(1, time.Hour).withSlotTaken(t).Hash(cctx, "password"); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash with a cancelled context: error = %v, want context.Canceled", err)
	}
	h.release()
	enc, err := h.Hash(ctx, "password")
	if err != nil {
		t.Fatalf("Hash after the slot freed: %v", err)
	}
	if ok, err := h.Verify(ctx, "password", enc); !ok || err != nil {
		t.Errorf("Verify = %v, %v; want true, nil", ok, err)
	}
	// Only the two that got a slot ran.
	if got := h.Runs(); got != 2 {
		t.Errorf("Runs = %d, want 2", got)
	}
}

// withSlotTaken fills every slot of h, for a test.
func (h *Hasher) withSlotTaken(t *testing.T) *Hasher {
	t.Helper()
	for range cap(h.slots) {
		h.slots <- struct{}{}
	}
	return h
}
