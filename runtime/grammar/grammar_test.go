package grammar

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
)

var schemas = []string{
	`{"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "sure": {"type": "boolean"}}, "required": ["answer", "sure"], "additionalProperties": false}`,
	`{"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3}}, "required": ["name", "age", "tags"]}`,
	`{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "number"}, "c": {"type": ["string", "null"], "maxLength": 5}}, "required": ["a"]}`,
	`{"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}`,
	`{"anyOf": [{"type": "integer"}, {"type": "boolean"}]}`,
	`{"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}, "type": "object", "properties": {"from": {"$ref": "#/$defs/pt"}, "to": {"$ref": "#/$defs/pt"}}, "required": ["from", "to"]}`,
	`{"type": "object", "properties": {"when": {"type": "string", "format": "date"}, "id": {"type": "string", "format": "uuid"}}, "required": ["when", "id"]}`,
	`{"allOf": [{"type": "object", "properties": {"k": {"const": "v"}}, "required": ["k"]}, {"properties": {"n": {"type": "integer"}}, "required": ["n"]}]}`,
	`{"type": "object", "properties": {"child": {"$ref": "#"}, "leaf": {"type": "boolean"}}, "required": ["leaf"]}`,
}

func vocabModel(t *testing.T) *kernels.Model {
	m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, "stories260K.gguf"), kernels.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Every grammar the converter writes parses with llama.cpp's own parser.
func TestGrammarsParseInLlamaCpp(t *testing.T) {
	m := vocabModel(t)
	for i, s := range append(schemas, `{}`, `{"type": "string"}`) {
		g, err := FromJSONSchema([]byte(s))
		if err != nil {
			t.Fatalf("schema %d: %v", i, err)
		}
		if err := m.ValidateGrammar(g); err != nil {
			t.Fatalf("schema %d: llama.cpp rejects the grammar: %v\n%s", i, err, g)
		}
	}
	if err := m.ValidateGrammar(JSONObject); err != nil {
		t.Fatal(err)
	}
}

func TestUnsupportedIsRefused(t *testing.T) {
	for _, s := range []string{
		`{"type": "string", "pattern": "^a+$"}`,
		`{"type": "string", "format": "email"}`,
		`{"$ref": "#/nowhere"}`,
		`{"type": "object", "properties": {}, "required": ["x"]}`,
		`not json`,
	} {
		if _, err := FromJSONSchema([]byte(s)); err == nil {
			t.Errorf("accepted %s", s)
		}
	}
}

func TestPropertyOrderIsDeclared(t *testing.T) {
	g, err := FromJSONSchema([]byte(`{"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g, "root-value-f0 ::= root-value-zeta-kv") {
		t.Fatalf("first member is not zeta:\n%s", g)
	}
}

// Sampled output under each grammar is JSON that satisfies its schema,
// even from a model that knows nothing of JSON.
func TestGenerationSatisfiesSchema(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 4, CtxPerSeq: 1024, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	prompt, _ := e.Tokenize("Once upon a time", true, false)
	for i, s := range schemas {
		g, err := FromJSONSchema([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		for seed := uint32(1); seed <= 3; seed++ {
			res, err := e.Generate(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 400,
				Sampling: kernels.SamplerParams{Temperature: 1, Seed: seed, Grammar: g}})
			if err != nil {
				t.Fatal(err)
			}
			if res.FinishReason != engine.FinishStop {
				t.Logf("schema %d seed %d: ran out of tokens (%q); skipping validation", i, seed, res.Text)
				continue
			}
			var doc any
			if err := json.Unmarshal([]byte(res.Text), &doc); err != nil {
				t.Fatalf("schema %d seed %d: output is not JSON: %q (%v)", i, seed, res.Text, err)
			}
			var sch any
			json.Unmarshal([]byte(s), &sch)
			if err := validate(sch, sch, doc); err != nil {
				t.Fatalf("schema %d seed %d: %q violates the schema: %v", i, seed, res.Text, err)
			}
		}
	}
}

// validate checks doc against the supported subset (for the tests).
func validate(root, s any, doc any) error {
	m, _ := s.(map[string]any)
	if ref, ok := m["$ref"].(string); ok {
		if ref == "#" {
			return validate(root, root, doc)
		}
		key := strings.TrimPrefix(ref, "#/$defs/")
		return validate(root, root.(map[string]any)["$defs"].(map[string]any)[key], doc)
	}
	if c, ok := m["const"]; ok && !reflect.DeepEqual(c, doc) {
		return fmt.Errorf("want const %v, got %v", c, doc)
	}
	if en, ok := m["enum"].([]any); ok {
		found := false
		for _, x := range en {
			found = found || reflect.DeepEqual(x, doc)
		}
		if !found {
			return fmt.Errorf("%v not in enum %v", doc, en)
		}
	}
	if any, ok := m["anyOf"].([]any); ok {
		for _, sub := range any {
			if validate(root, sub, doc) == nil {
				return nil
			}
		}
		return fmt.Errorf("%v matches no anyOf branch", doc)
	}
	if all, ok := m["allOf"].([]any); ok {
		for _, sub := range all {
			if err := validate(root, sub, doc); err != nil {
				return err
			}
		}
	}
	types := []string{}
	switch t := m["type"].(type) {
	case string:
		types = append(types, t)
	case []any:
		for _, x := range t {
			types = append(types, x.(string))
		}
	}
	if len(types) > 0 {
		ok := false
		for _, t := range types {
			switch v := doc.(type) {
			case nil:
				ok = ok || t == "null"
			case bool:
				ok = ok || t == "boolean"
			case float64:
				ok = ok || t == "number" || (t == "integer" && v == float64(int64(v)))
			case string:
				ok = ok || t == "string"
			case []any:
				ok = ok || t == "array"
			case map[string]any:
				ok = ok || t == "object"
			}
		}
		if !ok {
			return fmt.Errorf("%v is not of type %v", doc, types)
		}
	}
	switch v := doc.(type) {
	case string:
		if mx, ok := m["maxLength"].(float64); ok && len([]rune(v)) > int(mx) {
			return fmt.Errorf("%q longer than %v", v, mx)
		}
		if m["format"] == "date" && len(v) != 10 {
			return fmt.Errorf("%q is not a date", v)
		}
		if m["format"] == "uuid" && len(v) != 36 {
			return fmt.Errorf("%q is not a uuid", v)
		}
	case []any:
		if mn, ok := m["minItems"].(float64); ok && len(v) < int(mn) {
			return fmt.Errorf("%d items < %v", len(v), mn)
		}
		if mx, ok := m["maxItems"].(float64); ok && len(v) > int(mx) {
			return fmt.Errorf("%d items > %v", len(v), mx)
		}
		for _, x := range v {
			if it, ok := m["items"]; ok {
				if err := validate(root, it, x); err != nil {
					return err
				}
			}
		}
	case map[string]any:
		props, _ := m["properties"].(map[string]any)
		if req, ok := m["required"].([]any); ok {
			for _, r := range req {
				if _, ok := v[r.(string)]; !ok {
					return fmt.Errorf("missing required %q", r)
				}
			}
		}
		for k, x := range v {
			p, ok := props[k]
			if !ok {
				if m["additionalProperties"] == false {
					return fmt.Errorf("unexpected property %q", k)
				}
				continue
			}
			if err := validate(root, p, x); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	}
	return nil
}
