// Package web is the HTTP plumbing every service shares: RFC 9457 problem details with the
// contract's error codes, strict JSON decoding, a server with timeouts and graceful shutdown,
// health and readiness endpoints, Prometheus metrics, and panic recovery.
package web

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Error codes of the contract.
const (
	CodeBadRequest           = "bad_request"
	CodeUnauthenticated      = "unauthenticated"
	CodeInvalidCredentials   = "invalid_credentials"
	CodeForbidden            = "forbidden"
	CodeUserDisabled         = "user_disabled"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeEmailTaken           = "email_taken"
	CodeOutOfStock           = "out_of_stock"
	CodeLastAdmin            = "last_admin"
	CodePayloadTooLarge      = "payload_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeValidationFailed     = "validation_failed"
	CodeIdempotencyKeyReused = "idempotency_key_reused"
	CodeRateLimited          = "rate_limited"
	CodeReplicaLagging       = "replica_lagging"
	CodeUnavailable          = "unavailable"
	CodeInternal             = "internal"
)

// ProblemContentType is the media type of every error response.
const ProblemContentType = "application/problem+json"

// FieldError names one invalid field of a request body.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an RFC 9457 problem details document with the contract's extensions. It is also an
// error, so a helper can return one and the handler write it unchanged.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Code     string       `json:"code"`
	Errors   []FieldError `json:"errors,omitempty"`
	Instance string       `json:"instance,omitempty"`

	// RetryAfter, when positive, is sent as the Retry-After header (whole seconds, rounded up).
	RetryAfter time.Duration `json:"-"`
	// Authenticate, when set, is sent as the WWW-Authenticate header.
	Authenticate string `json:"-"`
}

// NewProblem returns a problem with the standard title of status.
func NewProblem(status int, code, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

// Error implements error.
func (p *Problem) Error() string {
	if p.Detail == "" {
		return p.Code
	}
	return p.Code + ": " + p.Detail
}

// Write sends p as the response.
func (p *Problem) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", ProblemContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		secs := int64((p.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	if p.Authenticate != "" {
		h.Set("WWW-Authenticate", p.Authenticate)
	}
	if p.Status == http.StatusRequestEntityTooLarge {
		// The rest of an oversized body is never read; ask the client not to reuse the connection.
		h.Set("Connection", "close")
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteProblem sends a problem with the given status, code and detail.
func WriteProblem(w http.ResponseWriter, status int, code, detail string) {
	NewProblem(status, code, detail).Write(w)
}

// Common problems.

// BadRequest is a 400 bad_request.
func BadRequest(detail string) *Problem {
	return NewProblem(http.StatusBadRequest, CodeBadRequest, detail)
}

// NotFound is a 404 not_found.
func NotFound(detail string) *Problem { return NewProblem(http.StatusNotFound, CodeNotFound, detail) }

// Forbidden is a 403 forbidden.
func Forbidden(detail string) *Problem {
	return NewProblem(http.StatusForbidden, CodeForbidden, detail)
}

// Invalid is a 422 validation_failed listing the invalid fields.
func Invalid(errs []FieldError) *Problem {
	p := NewProblem(http.StatusUnprocessableEntity, CodeValidationFailed, "the request has invalid fields")
	p.Errors = errs
	return p
}

// Unavailable is a 503 unavailable, telling the client to retry after d.
func Unavailable(detail string, d time.Duration) *Problem {
	p := NewProblem(http.StatusServiceUnavailable, CodeUnavailable, detail)
	p.RetryAfter = d
	return p
}

// Internal is the generic 500 sent for anything unexpected; its detail never reveals internals.
func Internal() *Problem {
	return NewProblem(http.StatusInternalServerError, CodeInternal, "an internal error occurred")
}
