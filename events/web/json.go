package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"
)

// MaxBodyBytes is the largest request body any endpoint accepts.
const MaxBodyBytes = 1 << 20

// maxDepth bounds the nesting of a request body, far above what any request needs.
const maxDepth = 32

// Validator is implemented by request bodies that can check their own fields.
type Validator interface {
	// Valid returns the invalid fields, or none.
	Valid() []FieldError
}

// Decode reads the JSON request body into v. It refuses a media type other than JSON (415), a body
// over MaxBodyBytes (413), malformed JSON, invalid UTF-8, duplicate or unknown fields, and trailing
// data (400). If v is a Validator, its field errors become a 422. The error is always a *Problem.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return NewProblem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "the body must be application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return NewProblem(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, fmt.Sprintf("the body exceeds %d bytes", MaxBodyBytes))
		}
		return BadRequest("the body could not be read")
	}
	if err := decodeJSON(body, v); err != nil {
		return BadRequest(err.Error())
	}
	if val, ok := v.(Validator); ok {
		if errs := val.Valid(); len(errs) > 0 {
			return Invalid(errs)
		}
	}
	return nil
}

// decodeJSON is the strict decoding of Decode, apart from HTTP.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("the body is empty")
	}
	if !utf8.Valid(body) {
		return errors.New("the body is not valid UTF-8")
	}
	if err := checkStructure(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the body has data after the JSON value")
	}
	return checkFieldCase(body, reflect.TypeOf(v))
}

// checkStructure walks the tokens of body and refuses duplicate object keys (encoding/json would
// silently keep the last) and nesting deeper than maxDepth.
func checkStructure(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		atKey  bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) > 0 {
				return errors.New("the body is not valid JSON (it ends early)")
			}
			return nil
		}
		if err != nil {
			return describe(err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if key, isKey := tok.(string); isKey && top != nil && top.object && top.atKey {
			if top.keys[key] {
				return fmt.Errorf("the body repeats the field %q", key)
			}
			top.keys[key] = true
			top.atKey = false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return errors.New("the body is nested too deeply")
			}
			object := tok == json.Delim('{')
			stack = append(stack, &frame{object: object, keys: map[string]bool{}, atKey: object})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				// Anything after the top-level value is left to the caller's trailing-data check.
				return nil
			}
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].atKey = true
		}
	}
}

// describe turns a decoding error into a message for the client, naming the field where known.
func describe(err error) error {
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if e.Field != "" {
			return fmt.Errorf("the field %q must be of type %s", e.Field, e.Type)
		}
		return fmt.Errorf("the body must be a JSON %s", e.Type)
	}
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("the body is not valid JSON (at byte %d)", e.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the body is not valid JSON (it ends early)")
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Errorf("the field %s is not allowed", rest)
	}
	return fmt.Errorf("the body is not valid JSON: %s", strings.TrimPrefix(msg, "json: "))
}

// Encode sends v as JSON with the given status. A List is written item by item, so that a page
// is never held encoded whole; anything else is encoded whole, then sent. An error of writing
// means the client went away, so it is not reported.
func Encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if s, ok := v.(jsonWriter); ok {
		_ = s.writeJSON(w)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// jsonWriter is a value that writes its own JSON piece by piece, as List does.
type jsonWriter interface {
	writeJSON(w io.Writer) error
}
