package apivalidate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// The AsyncAPI document's channel and message of the user events.
const (
	eventsChannel = "users"
	eventsMessage = "userEvent"
	// schemaFormat is the schemaFormat of the message's payload and headers: JSON Schema 2020-12.
	schemaFormat = "application/schema+json;version=2020-12"
)

// Events holds messages of the stream USERS to the AsyncAPI document: the subject to the
// channel's address and its parameters, the headers and the payload to the message's schemas (the
// payload's being the JSON Schema file the document refers to).
type Events struct {
	address  *regexp.Regexp // the channel address, a group per parameter
	params   []eventParam   // in the order of the address
	headers  *jsonschema.Schema
	payload  *jsonschema.Schema
	Examples []Example // the message's examples
}

type eventParam struct {
	name     string
	enum     []string
	location string // a JSON pointer into the payload, from "$message.payload#..."; "" when none
}

// Example is an example of the message in the AsyncAPI document.
type Example struct {
	Name    string
	Headers map[string]string
	Payload []byte
}

// LoadEvents reads the AsyncAPI document at path (docs/asyncapi.yaml) and compiles its message
// schemas, with formats asserted, loading the files the payload refers to.
func LoadEvents(path string) (*Events, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(abs)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if doc["asyncapi"] != "3.0.0" {
		return nil, fmt.Errorf("%s: asyncapi %v, want 3.0.0", path, doc["asyncapi"])
	}
	// The document as JSON values, for the JSON Schema compiler (which also resolves the payload's
	// reference to the schema file, relative to the document).
	asJSON, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	value, err := jsonschema.UnmarshalJSON(bytes.NewReader(asJSON))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(abs, value); err != nil {
		return nil, err
	}

	channel, err := lookup(doc, "/channels/"+eventsChannel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	e := &Events{}
	if err := e.parseAddress(channel); err != nil {
		return nil, fmt.Errorf("%s: channel %s: %w", path, eventsChannel, err)
	}
	msgRef, err := lookup(doc, "/channels/"+eventsChannel+"/messages/"+eventsMessage+"/$ref")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ptr, ok := msgRef.(string)
	if !ok || !strings.HasPrefix(ptr, "#/") {
		return nil, fmt.Errorf("%s: message %s: $ref %v, want a reference into the document", path, eventsMessage, msgRef)
	}
	ptr = strings.TrimPrefix(ptr, "#")
	msg, err := lookup(doc, ptr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, part := range []string{"headers", "payload"} {
		format, _ := lookup(msg, "/"+part+"/schemaFormat")
		if format != schemaFormat {
			return nil, fmt.Errorf("%s: message %s: %s schemaFormat %v, want %s", path, eventsMessage, part, format, schemaFormat)
		}
		sch, err := c.Compile(abs + "#" + ptr + "/" + part + "/schema")
		if err != nil {
			return nil, fmt.Errorf("%s: message %s: %s: %w", path, eventsMessage, part, err)
		}
		if part == "headers" {
			e.headers = sch
		} else {
			e.payload = sch
		}
	}
	examples, _ := lookup(msg, "/examples")
	list, _ := examples.([]any)
	for i, ex := range list {
		m, _ := ex.(map[string]any)
		payload, err := json.Marshal(m["payload"])
		if err != nil {
			return nil, fmt.Errorf("%s: example %d: %w", path, i, err)
		}
		x := Example{Headers: map[string]string{}, Payload: payload}
		x.Name, _ = m["name"].(string)
		hs, _ := m["headers"].(map[string]any)
		for k, v := range hs {
			x.Headers[k] = fmt.Sprint(v)
		}
		e.Examples = append(e.Examples, x)
	}
	return e, nil
}

// parseAddress reads the channel's address and parameters.
func (e *Events) parseAddress(channel any) error {
	address, _ := lookup(channel, "/address")
	addr, ok := address.(string)
	if !ok || addr == "" {
		return fmt.Errorf("address %v, want one", address)
	}
	params, _ := lookup(channel, "/parameters")
	pm, _ := params.(map[string]any)
	var re strings.Builder
	re.WriteString("^")
	rest := addr
	for {
		i := strings.Index(rest, "{")
		if i < 0 {
			re.WriteString(regexp.QuoteMeta(rest))
			break
		}
		j := strings.Index(rest[i:], "}")
		if j < 0 {
			return fmt.Errorf("address %q: unclosed {", addr)
		}
		re.WriteString(regexp.QuoteMeta(rest[:i]))
		name := rest[i+1 : i+j]
		def, ok := pm[name].(map[string]any)
		if !ok {
			return fmt.Errorf("address %q: parameter %s is not described", addr, name)
		}
		p := eventParam{name: name}
		if list, ok := def["enum"].([]any); ok {
			for _, v := range list {
				p.enum = append(p.enum, fmt.Sprint(v))
			}
		}
		if loc, ok := def["location"].(string); ok {
			ptr, found := strings.CutPrefix(loc, "$message.payload#")
			if !found {
				return fmt.Errorf("parameter %s: location %q, want $message.payload#...", name, loc)
			}
			p.location = ptr
		}
		e.params = append(e.params, p)
		re.WriteString(`([^.]+)`)
		rest = rest[i+j+1:]
	}
	re.WriteString("$")
	if len(e.params) != len(pm) {
		return fmt.Errorf("address %q has %d parameters, the channel describes %d", addr, len(e.params), len(pm))
	}
	var err error
	e.address, err = regexp.Compile(re.String())
	return err
}

// Check returns nil when a message of the stream agrees with the document, else an error saying
// every disagreement: its subject must be the channel's address, with each parameter in its enum
// and equal to the payload's value at its location; its headers and payload must match the
// message's schemas; and, as docs/contract.md adds, the subject's type must be the payload's type
// without "user.", and the Nats-Msg-Id header the payload's id.
func (e *Events) Check(subject string, header map[string][]string, data []byte) error {
	var problems []string
	payload, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("asyncapi: message on %s: the payload is not JSON: %w", subject, err)
	}
	if err := e.payload.Validate(payload); err != nil {
		problems = append(problems, "payload: "+oneLine(err))
	}
	hs := map[string]any{}
	for k, v := range header {
		if len(v) > 0 {
			hs[k] = v[0]
		}
	}
	if err := e.headers.Validate(hs); err != nil {
		problems = append(problems, "headers: "+oneLine(err))
	}
	m := e.address.FindStringSubmatch(subject)
	if m == nil {
		problems = append(problems, "the subject is not of the channel's address "+e.address.String())
	} else {
		for i, p := range e.params {
			got := m[i+1]
			if len(p.enum) > 0 && !slices.Contains(p.enum, got) {
				problems = append(problems, fmt.Sprintf("parameter %s %q is none of %v", p.name, got, p.enum))
			}
			if p.location != "" {
				if want, err := lookup(payload, p.location); err != nil || want != got {
					problems = append(problems, fmt.Sprintf("parameter %s %q differs from the payload's %s (%v)", p.name, got, p.location, want))
				}
			}
		}
	}
	obj, _ := payload.(map[string]any)
	for i, p := range e.params {
		if typ, _ := obj["type"].(string); m != nil && p.name == "type" && "user."+m[i+1] != typ {
			problems = append(problems, fmt.Sprintf("the subject's type %q is not the payload's type %q without \"user.\"", m[i+1], typ))
		}
	}
	if id, _ := obj["id"].(string); hs["Nats-Msg-Id"] != id {
		problems = append(problems, fmt.Sprintf("Nats-Msg-Id %v is not the payload's id %q", hs["Nats-Msg-Id"], id))
	}
	if len(problems) > 0 {
		return fmt.Errorf("asyncapi: message on %s: %s", subject, strings.Join(problems, "; "))
	}
	return nil
}

// lookup returns the value at a JSON pointer in v.
func lookup(v any, pointer string) (any, error) {
	if pointer == "" {
		return v, nil
	}
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: %q is not in an object", pointer, tok)
		}
		if v, ok = m[tok]; !ok {
			return nil, fmt.Errorf("%s: no %q", pointer, tok)
		}
	}
	return v, nil
}
