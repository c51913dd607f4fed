package seal_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/authmesh/account/internal/seal"
)

const (
	secretA = "first-secret-of-at-least-32-characters"
	secretB = "second-secret-of-at-least-32-characters"
)

func mustNew(t *testing.T, secrets ...string) *seal.Sealer {
	t.Helper()
	s, err := seal.New(secrets)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	plain := bytes.Repeat([]byte{7}, 32)
	sealed := mustNew(t, secretA).Seal(plain, "kid-1")
	if bytes.Contains(sealed, plain) {
		t.Fatal("the sealed value holds the plaintext")
	}
	again := mustNew(t, secretA).Seal(plain, "kid-1")
	if bytes.Equal(sealed, again) {
		t.Error("two seals of the same plaintext are equal: the nonce does not change")
	}

	tampered := bytes.Clone(sealed)
	tampered[len(tampered)/2] ^= 1
	tests := []struct {
		name    string
		opener  *seal.Sealer
		sealed  []byte
		label   string
		want    []byte
		wantIdx int
	}{
		{"round trip", mustNew(t, secretA), sealed, "kid-1", plain, 0},
		{"wrong secret", mustNew(t, secretB), sealed, "kid-1", nil, 0},
		{"swapped kid", mustNew(t, secretA), sealed, "kid-2", nil, 0},
		{"tampered byte", mustNew(t, secretA), tampered, "kid-1", nil, 0},
		{"truncated", mustNew(t, secretA), sealed[:10], "kid-1", nil, 0},
		{"empty", mustNew(t, secretA), nil, "kid-1", nil, 0},
		{"rotation: old secret listed second", mustNew(t, secretB, secretA), sealed, "kid-1", plain, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, idx, err := tt.opener.Open(tt.sealed, tt.label)
			if tt.want == nil {
				if !errors.Is(err, seal.ErrOpen) || got != nil {
					t.Fatalf("Open = %x, %v; want ErrOpen", got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) || idx != tt.wantIdx {
				t.Fatalf("Open = %x, %d, %v; want %x, %d", got, idx, err, tt.want, tt.wantIdx)
			}
		})
	}
}

func TestRotationSealsWithFirst(t *testing.T) {
	t.Parallel()
	plain := []byte("seed")
	resealed := mustNew(t, secretB, secretA).Seal(plain, "kid")
	if _, _, err := mustNew(t, secretA).Open(resealed, "kid"); err == nil {
		t.Error("a value sealed after the rotation opens with the old secret alone")
	}
	if got, idx, err := mustNew(t, secretB).Open(resealed, "kid"); err != nil || idx != 0 || !bytes.Equal(got, plain) {
		t.Errorf("Open with the new secret alone = %q, %d, %v", got, idx, err)
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	short := "only-thirty-one-characters-long"
	tests := []struct {
		name string
		list string
		want string // in the error
	}{
		{"unset", "", "no secret"},
		{"only commas and space", " , ,", "no secret"},
		{"short", short, "31 characters"},
		{"short second", secretA + "," + short, "secret 2 of 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := seal.Parse(tt.list)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), short) {
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
	// 32 characters of several bytes each count as 32.
	if _, err := seal.Parse(strings.Repeat("é", 32)); err != nil {
		t.Errorf("32 two-byte characters: %v", err)
	}
	s, err := seal.Parse(" " + secretA + " , " + secretB + " ")
	if err != nil || s.Len() != 2 {
		t.Fatalf("Parse of two secrets = %v, %v", s, err)
	}
	// Space around a secret is not part of it.
	if _, _, err := mustNew(t, secretA).Open(s.Seal([]byte("x"), "l"), "l"); err != nil {
		t.Errorf("the first parsed secret is not %q trimmed: %v", secretA, err)
	}
}
