package web

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// checkFieldCase refuses object keys that match a field of t only when case is ignored:
// encoding/json would bind "ROLE" to a field tagged "role", and a body that differs from the
// contract in this way is a client bug (or an attempt to smuggle a field past a filter).
func checkFieldCase(raw json.RawMessage, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil // not an object: the decoder reports the type error
		}
		fields := jsonFields(t)
		for key, val := range obj {
			f, ok := fields[key]
			if !ok {
				return fmt.Errorf("the field %q is not allowed", key)
			}
			if err := checkFieldCase(val, f); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return nil
		}
		for _, item := range items {
			if err := checkFieldCase(item, t.Elem()); err != nil {
				return err
			}
		}
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		for _, val := range obj {
			if err := checkFieldCase(val, t.Elem()); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields maps the exact JSON names of t's exported fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}
