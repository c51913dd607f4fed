package apivalidate

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// documentPath is the OpenAPI document of a service in the repository.
func documentPath(service string) string {
	return filepath.Join(root, service, "internal", "server", "openapi.json")
}

func readDocument(t *testing.T, service string) []byte {
	t.Helper()
	data, err := os.ReadFile(documentPath(service))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDocumentsAreValid: each service's document is a valid OpenAPI 3.1 document, its schemas
// valid JSON Schema 2020-12 and its examples valid.
func TestDocumentsAreValid(t *testing.T) {
	for _, s := range Services {
		if _, err := Load(readDocument(t, s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// TestDocumentsMatchRoutes: each document has exactly the operations the service routes: those
// of its server package's routes.go, and the health, readiness and metrics endpoints that
// events/web registers on every service.
func TestDocumentsMatchRoutes(t *testing.T) {
	common := routePatterns(t, filepath.Join(root, "events", "web", "server.go"))
	if len(common) != 3 {
		t.Fatalf("events/web registers %v, want /healthz, /readyz and /metrics: the scan has gone blind", common)
	}
	for _, s := range Services {
		routes := append(routePatterns(t, filepath.Join(root, s, "internal", "server", "routes.go")), common...)
		doc, err := Load(readDocument(t, s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		documented := operations(doc)
		for _, r := range routes {
			if !slices.Contains(documented, r) {
				t.Errorf("%s routes %s, which its OpenAPI document lacks", s, r)
			}
		}
		for _, op := range documented {
			if !slices.Contains(routes, op) {
				t.Errorf("%s's OpenAPI document has %s, which the service does not route", s, op)
			}
		}
		if len(routes) < 8 {
			t.Errorf("%s: only %d routes found: the scan has gone blind", s, len(routes))
		}
	}
}

// routePatterns returns the patterns ("GET /v1/users/{id}") of the mux.Handle and mux.HandleFunc
// calls of a Go file.
func routePatterns(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "mux" {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Errorf("%s: a route whose pattern is not a string literal", file)
			return true
		}
		p, err := strconv.Unquote(lit.Value)
		if err != nil {
			t.Fatal(err)
		}
		patterns = append(patterns, p)
		return true
	})
	return patterns
}

// TestDocumentsShareComponents: what every service answers alike (problems, their headers, list
// parameters, the token scheme) is described alike in the three documents.
func TestDocumentsShareComponents(t *testing.T) {
	shared := map[string][]string{
		"schemas":         {"Problem", "FieldError", "Health", "Ready", "OpenAPIDocument"},
		"headers":         {"Retry-After", "WWW-Authenticate", "NoStore", "Location"},
		"parameters":      {"limit", "cursor"},
		"securitySchemes": {"bearerAuth"},
		"responses": {"BadRequest", "Unauthenticated", "UserDisabled", "Forbidden", "NotFound", "PayloadTooLarge",
			"UnsupportedMediaType", "ValidationFailed", "Internal"},
	}
	docs := map[string]map[string]map[string]any{}
	for _, s := range Services {
		var doc struct {
			Components map[string]map[string]any `json:"components"`
		}
		if err := json.Unmarshal(readDocument(t, s), &doc); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		docs[s] = doc.Components
	}
	for kind, names := range shared {
		for _, name := range names {
			first := docs[Services[0]][kind][name]
			if first == nil {
				t.Errorf("%s lacks components.%s.%s", Services[0], kind, name)
				continue
			}
			for _, s := range Services[1:] {
				if !reflect.DeepEqual(docs[s][kind][name], first) {
					t.Errorf("components.%s.%s of %s differs from %s's", kind, name, s, Services[0])
				}
			}
		}
	}
}

// TestDocumentsHaveEveryErrorCode: the documents' Problem lists exactly the error codes of
// events/web (the codes of docs/contract.md).
func TestDocumentsHaveEveryErrorCode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, "events", "web", "problem.go"), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Names) != 1 || !strings.HasPrefix(spec.Names[0].Name, "Code") || len(spec.Values) != 1 {
			return true
		}
		if lit, ok := spec.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			code, _ := strconv.Unquote(lit.Value)
			codes = append(codes, code)
		}
		return true
	})
	if len(codes) < 15 {
		t.Fatalf("found the codes %v in events/web: the scan has gone blind", codes)
	}
	slices.Sort(codes)
	for _, s := range Services {
		doc, err := Load(readDocument(t, s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		var enum []string
		for _, v := range doc.Components.Schemas["Problem"].Value.Properties["code"].Value.Enum {
			enum = append(enum, v.(string))
		}
		slices.Sort(enum)
		if !slices.Equal(enum, codes) {
			t.Errorf("%s: the Problem's codes are %v, events/web has %v", s, enum, codes)
		}
	}
}

// asyncAPIPath is the AsyncAPI document of the user events.
var asyncAPIPath = filepath.Join(root, "docs", "asyncapi.yaml")

// TestAsyncAPIDocument: docs/asyncapi.yaml parses as AsyncAPI 3.0, its payload refers to
// events/schema/event.schema.json (which compiles, with the user snapshot it refers to), and its
// examples, and the schema's own, are events it accepts.
func TestAsyncAPIDocument(t *testing.T) {
	e, err := LoadEvents(asyncAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(asyncAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "$ref: ../events/schema/event.schema.json") {
		t.Error("docs/asyncapi.yaml: the payload does not refer to ../events/schema/event.schema.json")
	}
	if len(e.Examples) < 2 {
		t.Fatalf("%d examples, want some", len(e.Examples))
	}
	for _, x := range e.Examples {
		if err := e.Check(exampleSubject(t, x.Payload), toHeader(x.Headers), x.Payload); err != nil {
			t.Errorf("example %s: %v", x.Name, err)
		}
	}

	c := jsonschema.NewCompiler()
	c.AssertFormat()
	file, err := filepath.Abs(filepath.Join(root, "events", "schema", "event.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Schema   string            `json:"$schema"`
		Examples []json.RawMessage `json:"examples"`
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != "https://json-schema.org/draft/2020-12/schema" || len(doc.Examples) == 0 {
		t.Errorf("event.schema.json: $schema %q with %d examples, want draft 2020-12 and examples", doc.Schema, len(doc.Examples))
	}
	for i, x := range doc.Examples {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(x)))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("event.schema.json example %d: %v", i, err)
		}
	}
}

// exampleSubject is the subject an event is published on: users.<type without "user.">.<user id>.
func exampleSubject(t *testing.T, payload []byte) string {
	t.Helper()
	var e struct {
		Type string `json:"type"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(payload, &e); err != nil {
		t.Fatal(err)
	}
	return "users." + strings.TrimPrefix(e.Type, "user.") + "." + e.User.ID
}

func toHeader(h map[string]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		out[k] = []string{v}
	}
	return out
}
