package blog_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/authmesh/blog/internal/blog"
	"github.com/google/go-cmp/cmp"
)

func ptr(s string) *string { return &s }

// invalidFields returns the fields a Validate result names, or nil for a valid input.
func invalidFields(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var v *blog.ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("Validate = %v, want a *ValidationError", err)
	}
	var out []string
	for _, f := range v.Fields {
		out = append(out, f.Field)
	}
	return out
}

func TestDraftValidate(t *testing.T) {
	tests := []struct {
		name  string
		draft blog.Draft
		want  []string
	}{
		{"valid", blog.Draft{Title: "T", Body: "B"}, nil},
		{"kept as given", blog.Draft{Title: "  T  ", Body: "\n B \n"}, nil},
		{"longest", blog.Draft{Title: strings.Repeat("日", blog.MaxTitle), Body: strings.Repeat("本", blog.MaxBody)}, nil},
		{"empty", blog.Draft{}, []string{"title", "body"}},
		{"blank", blog.Draft{Title: " \u00a0", Body: "\t\n"}, []string{"title", "body"}},
		{"title too long", blog.Draft{Title: strings.Repeat("日", blog.MaxTitle+1), Body: "B"}, []string{"title"}},
		{"body too long", blog.Draft{Title: "T", Body: strings.Repeat("x", blog.MaxBody+1)}, []string{"body"}},
		{"control in title", blog.Draft{Title: "a\tb", Body: "B"}, []string{"title"}},
		{"NUL in body", blog.Draft{Title: "T", Body: "a\x00b"}, []string{"body"}},
		{"tabs and newlines in body", blog.Draft{Title: "T", Body: "a\tb\r\nc"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, invalidFields(t, tt.draft.Validate())); diff != "" {
				t.Errorf("Validate(%.40q) invalid fields mismatch (-want +got):\n%s", tt.draft.Title, diff)
			}
		})
	}
}

func TestPatchValidate(t *testing.T) {
	tests := []struct {
		name  string
		patch blog.Patch
		want  []string
	}{
		{"title only", blog.Patch{Title: ptr("T")}, nil},
		{"body only", blog.Patch{Body: ptr("B")}, nil},
		{"both", blog.Patch{Title: ptr("T"), Body: ptr("B")}, nil},
		{"nothing", blog.Patch{}, []string{"title", "body"}},
		{"empty title", blog.Patch{Title: ptr("")}, []string{"title"}},
		{"empty body", blog.Patch{Title: ptr("T"), Body: ptr(" ")}, []string{"body"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, invalidFields(t, tt.patch.Validate())); diff != "" {
				t.Errorf("Validate invalid fields mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
