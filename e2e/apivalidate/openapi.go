// Package apivalidate holds the services to their API descriptions, so that neither can drift
// from the code: the OpenAPI 3.1 document of each service (account/internal/server/openapi.json,
// and the same file of blog and shop, served at GET /openapi.json), and the AsyncAPI 3.0 document
// of the user events, docs/asyncapi.yaml, whose payload is the JSON Schema of
// events/schema/event.schema.json.
//
// A Validator checks HTTP exchanges (a request a client sent and the answer it got) against the
// document of the service that answered, with kin-openapi's openapi3filter, which validates the
// schemas of OpenAPI 3.1 documents as JSON Schema 2020-12. The black-box suite (e2e/blackbox)
// passes every exchange of its tests through one (apitest.SetObserver); this package's tests add
// traffic that reaches every documented operation and its error statuses, and compare the
// documents with the routes of the code. Events checks the messages of the stream USERS against
// the AsyncAPI document.
package apivalidate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
)

// Services are the services that have an OpenAPI document.
var Services = []string{"account", "blog", "shop"}

// Document is the OpenAPI document of a service and where the service answers.
type Document struct {
	Service string // "account", "blog" or "shop"
	URL     string // base URL, e.g. http://127.0.0.1:8081
	JSON    []byte
}

// Load parses an OpenAPI document and validates it as the OpenAPI version it declares (3.1: its
// schemas as JSON Schema 2020-12), examples included. The document's "uuid" strings are those the
// services accept in a path: 8-4-4-4-12 hexadecimal digits.
func Load(data []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("openapi %q: want 3.1", doc.OpenAPI)
	}
	doc.SetStringFormatValidator("uuid", openapi3.NewCallbackValidator(checkUUID))
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return doc, nil
}

func checkUUID(s string) error {
	if _, err := uuid.Parse(s); err != nil || len(s) != 36 {
		return errors.New("not a UUID of 36 characters")
	}
	return nil
}

// Fetch returns the document a service serves at GET /openapi.json.
func Fetch(ctx context.Context, baseURL string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/openapi.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s/openapi.json: %w", baseURL, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		return nil, fmt.Errorf("GET %s/openapi.json: %d %s, want 200 application/json", baseURL, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return body, nil
}

// ForServices returns a Validator of the services at urls (by service name), with the documents
// they serve.
func ForServices(ctx context.Context, urls map[string]string) (*Validator, error) {
	var docs []Document
	for _, name := range slices.Sorted(maps.Keys(urls)) {
		data, err := Fetch(ctx, urls[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		docs = append(docs, Document{Service: name, URL: urls[name], JSON: data})
	}
	return New(docs...)
}

// Validator checks HTTP exchanges against the services' documents, and counts the answers of each
// documented operation by status. It is safe for concurrent use.
type Validator struct {
	services []*service

	mu   sync.Mutex
	seen map[string]map[int]int // operation (see opKey) → status → answers
}

// service is one service's document, ready to match requests.
type service struct {
	name   string
	origin string // scheme://host:port of its URL
	doc    *openapi3.T
	router routers.Router
	// problem is the document's Problem schema, which answers to unrouted requests must match.
	problem *openapi3.Schema
}

// New returns a Validator of the documents, each loaded with Load.
func New(docs ...Document) (*Validator, error) {
	v := &Validator{seen: map[string]map[int]int{}}
	for _, d := range docs {
		doc, err := Load(d.JSON)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Service, err)
		}
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: router: %w", d.Service, err)
		}
		u, err := url.Parse(d.URL)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Service, err)
		}
		problem := doc.Components.Schemas["Problem"]
		if problem == nil || problem.Value == nil {
			return nil, fmt.Errorf("%s: no components.schemas.Problem", d.Service)
		}
		v.services = append(v.services, &service{
			name: d.Service, origin: u.Scheme + "://" + u.Host, doc: doc, router: router, problem: problem.Value,
		})
		for _, op := range operations(doc) {
			v.seen[d.Service+" "+op] = map[int]int{}
		}
	}
	return v, nil
}

// operations lists the documented operations of doc as "METHOD /path".
func operations(doc *openapi3.T) []string {
	var ops []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	slices.Sort(ops)
	return ops
}

// Observe fails t unless ex agrees with the documents (see Check). It is an apitest observer.
func (v *Validator) Observe(t testing.TB, ex apitest.Exchange) {
	t.Helper()
	if err := v.Check(ex); err != nil {
		t.Error(err)
	}
}

// Check returns nil when the exchange agrees with the document of the service that answered, and
// otherwise an error naming the operation and every disagreement:
//
//   - the answer must be one the operation documents, for its status: body and headers;
//   - a request the document refuses (a missing token included) must get a 4xx;
//   - a request no operation documents must get the 404 not_found problem, or, for a path
//     documented with other methods only, the 405 method_not_allowed problem whose Allow header
//     names exactly the documented methods.
//
// A request to no service of the Validator is not checked.
func (v *Validator) Check(ex apitest.Exchange) error {
	s := v.service(ex.Request.URL)
	if s == nil {
		return nil
	}
	ctx := context.Background()
	req := ex.Request.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(ex.RequestBody))
	if len(ex.RequestBody) > 0 && req.Header.Get("Content-Type") == "" {
		// The services read a body without Content-Type as JSON, as the documents say.
		req.Header.Set("Content-Type", "application/json")
	}
	resp := ex.Response
	what := fmt.Sprintf("openapi %s: %s %s → %d", s.name, req.Method, req.URL.RequestURI(), resp.StatusCode)

	find := req
	if req.Method == http.MethodHead {
		// Served as GET without the body (net/http does it for every GET route); kin-openapi checks
		// neither its headers nor its body.
		find = req.Clone(ctx)
		find.Method = http.MethodGet
	}
	route, params, err := s.router.FindRoute(find)
	if err != nil {
		if problems := s.checkUnrouted(req, resp, ex.ResponseBody, err); len(problems) > 0 {
			return fmt.Errorf("%s: %s", what, strings.Join(problems, "; "))
		}
		return nil
	}
	v.record(s.name+" "+req.Method+" "+route.Path, resp.StatusCode)
	what = fmt.Sprintf("openapi %s: %s %s (%s) → %d", s.name, req.Method, route.Path, req.URL.RequestURI(), resp.StatusCode)

	schemaOpts := s.doc.GetSchemaValidationOptions()
	in := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{
			MultiError:              true,
			AuthenticationFunc:      bearerSent,
			SchemaValidationOptions: schemaOpts,
		},
	}
	reqErr := openapi3filter.ValidateRequest(ctx, in)

	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options: &openapi3filter.Options{
			MultiError:              true,
			IncludeResponseStatus:   true,
			SchemaValidationOptions: schemaOpts,
		},
	}
	out.SetBodyBytes(ex.ResponseBody)
	var problems []string
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		problems = append(problems, "the answer is not one the document gives: "+oneLine(err))
	}
	if reqErr != nil && resp.StatusCode < 400 {
		problems = append(problems, "the service accepted a request the document refuses: "+oneLine(reqErr))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", what, strings.Join(problems, "; "))
	}
	return nil
}

// service returns the service that u is a URL of, or nil.
func (v *Validator) service(u *url.URL) *service {
	origin := u.Scheme + "://" + u.Host
	for _, s := range v.services {
		if s.origin == origin {
			return s
		}
	}
	return nil
}

// bearerSent is the check of the bearerAuth scheme: one Authorization header, Bearer with a
// token. Whether the token is valid only the service can tell.
func bearerSent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	vals := in.RequestValidationInput.Request.Header.Values("Authorization")
	if len(vals) != 1 {
		return errors.New("no bearer token (one Authorization header) was sent")
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("the Authorization header is not a bearer token")
	}
	return nil
}

// checkUnrouted checks the answer to a request that no documented operation matches (routeErr
// says why), returning what is wrong with it.
func (s *service) checkUnrouted(req *http.Request, resp *http.Response, body []byte, routeErr error) []string {
	want, code := http.StatusNotFound, "not_found"
	var documented []string
	if errors.Is(routeErr, routers.ErrMethodNotAllowed) {
		want, code = http.StatusMethodNotAllowed, "method_not_allowed"
		documented = s.methodsOf(req)
	} else if !errors.Is(routeErr, routers.ErrPathNotFound) {
		return []string{"route: " + routeErr.Error()}
	}
	var problems []string
	if resp.StatusCode != want {
		return []string{fmt.Sprintf("no operation of the document matches (%v), so the answer must be %d %s", routeErr, want, code)}
	}
	if msg := s.checkProblem(resp, body, code); msg != "" {
		problems = append(problems, msg)
	}
	if want == http.StatusMethodNotAllowed {
		var allow []string
		for _, m := range strings.Split(resp.Header.Get("Allow"), ",") {
			if m = strings.TrimSpace(m); m != "" && m != http.MethodHead {
				allow = append(allow, m)
			}
		}
		slices.Sort(allow)
		if !slices.Equal(allow, documented) {
			problems = append(problems, fmt.Sprintf("Allow: %s (HEAD aside), but the document has %v for this path", resp.Header.Get("Allow"), documented))
		}
	}
	return problems
}

// methodsOf returns the methods the document has for req's path, sorted.
func (s *service) methodsOf(req *http.Request) []string {
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		r := req.Clone(context.Background())
		r.Method = m
		if route, _, err := s.router.FindRoute(r); err == nil {
			var methods []string
			for method := range route.PathItem.Operations() {
				methods = append(methods, method)
			}
			slices.Sort(methods)
			return methods
		}
	}
	return nil
}

// checkProblem returns what keeps an answer from being the document's Problem with code, or "".
func (s *service) checkProblem(resp *http.Response, body []byte, code string) string {
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		return "Content-Type " + ct + ", want application/problem+json"
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return "the body is not JSON: " + err.Error()
	}
	opts := append(s.doc.GetSchemaValidationOptions(), openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse(), openapi3.MultiErrors())
	if err := s.problem.VisitJSON(value, opts...); err != nil {
		return "the body is not a Problem: " + oneLine(err)
	}
	if got, _ := value.(map[string]any)["code"].(string); got != code {
		return "code " + strconv.Quote(got) + ", want " + code
	}
	return ""
}

// record counts an answer of an operation.
func (v *Validator) record(op string, status int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen[op] == nil {
		v.seen[op] = map[int]int{}
	}
	v.seen[op][status]++
}

// Unexercised lists the documented operations that no exchange reached ("account GET
// /v1/users/{id}"), then, for the others, each documented status that no answer had
// ("account GET /v1/users/{id} 404"), leaving out the statuses skip says to.
func (v *Validator) Unexercised(skip func(op string, status int) bool) (operations, statuses []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.services {
		for path, item := range s.doc.Paths.Map() {
			for method, op := range item.Operations() {
				key := s.name + " " + method + " " + path
				seen := v.seen[key]
				if len(seen) == 0 {
					operations = append(operations, key)
					continue
				}
				for code := range op.Responses.Map() {
					status, err := strconv.Atoi(code)
					if err != nil || seen[status] > 0 || (skip != nil && skip(key, status)) {
						continue
					}
					statuses = append(statuses, key+" "+code)
				}
			}
		}
	}
	slices.Sort(operations)
	slices.Sort(statuses)
	return operations, statuses
}

// Report summarizes what the Validator has seen: the answers of each documented operation by
// status, and the operations no exchange reached.
func (v *Validator) Report() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b strings.Builder
	reached := 0
	for _, op := range slices.Sorted(maps.Keys(v.seen)) {
		seen := v.seen[op]
		if len(seen) == 0 {
			fmt.Fprintf(&b, "  %s: not exercised\n", op)
			continue
		}
		reached++
		var counts []string
		for _, status := range slices.Sorted(maps.Keys(seen)) {
			counts = append(counts, fmt.Sprintf("%d×%d", status, seen[status]))
		}
		fmt.Fprintf(&b, "  %s: %s\n", op, strings.Join(counts, " "))
	}
	return fmt.Sprintf("OpenAPI validation: %d of %d documented operations exercised\n%s", reached, len(v.seen), b.String())
}

// oneLine shortens a validation error to one line: kin-openapi's errors quote the schema and the
// value over many lines.
func oneLine(err error) string {
	var parts []string
	var me openapi3.MultiError
	if errors.As(err, &me) {
		for _, e := range me {
			parts = append(parts, oneLine(e))
		}
		return strings.Join(parts, " | ")
	}
	msg := err.Error()
	if i := strings.Index(msg, "\nSchema:"); i >= 0 {
		msg = msg[:i]
	}
	return strings.Join(strings.Fields(msg), " ")
}
