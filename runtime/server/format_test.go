package server

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/llmrt/llmrt/runtime/engine"
)

// longSpace is whitespace the grammars no longer allow between two JSON
// tokens: two newlines, or more than one newline plus 20 of indentation.
var longSpace = regexp.MustCompile(`\n[ \t]*\n|[ \t]{22,}`)

// chatJSON asks for a JSON answer within 64 tokens and returns the content
// and finish reason.
func chatJSON(t *testing.T, ts *testServer, rf map[string]any, temp float64, seed int) (string, string) {
	t.Helper()
	resp, data := ts.post(t, "/v1/chat/completions", map[string]any{"model": "stories260K",
		"messages":   []map[string]any{{"role": "user", "content": "Describe an animal as JSON"}},
		"max_tokens": 64, "temperature": temp, "seed": seed, "response_format": rf})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, data)
	}
	var cr ChatResponse
	if err := json.Unmarshal(data, &cr); err != nil || len(cr.Choices) != 1 || cr.Choices[0].Message.Content == nil {
		t.Fatalf("not a chat completion: %s", data)
	}
	c := *cr.Choices[0].Message.Content
	if longSpace.MatchString(c) {
		t.Errorf("temperature %v seed %d: unbounded whitespace in %q", temp, seed, c)
	}
	return c, cr.Choices[0].FinishReason
}

// A tiny model's JSON answers parse within 64 tokens. Whitespace between
// tokens is one space or one newline plus indentation, so newline runs
// cannot fill the budget; and an answer that would run past max_tokens
// (stories260K writes stories into strings and never ends a json_object by
// itself) is closed with the grammar's shortest ending, finish_reason
// "length".
func TestJSONAnswersParseWithinSmallBudget(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{})
	schema := func(props map[string]any, required ...string) map[string]any {
		s := map[string]any{"type": "object", "properties": props, "required": required, "additionalProperties": false}
		return map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "animal", "strict": true, "schema": s}}
	}
	str, num := map[string]any{"type": "string"}, map[string]any{"type": "integer"}
	// The model ends this one itself, greedily.
	c, finish := chatJSON(t, ts, schema(map[string]any{"name": str}, "name"), 0, 0)
	var doc map[string]any
	if err := json.Unmarshal([]byte(c), &doc); err != nil || finish != "stop" {
		t.Fatalf("greedy answer %q (finish %s) does not parse: %v", c, finish, err)
	}
	if name, ok := doc["name"].(string); !ok || len(doc) != 1 || name == "" {
		t.Fatalf("greedy answer %q does not match the schema", c)
	}
	// These run into max_tokens and are closed.
	for _, rf := range []map[string]any{schema(map[string]any{"name": str, "age": num}, "name", "age"), {"type": "json_object"}} {
		for _, run := range []struct {
			temp float64
			seed int
		}{{0, 0}, {0.8, 1}} {
			c, finish := chatJSON(t, ts, rf, run.temp, run.seed)
			doc = nil
			if err := json.Unmarshal([]byte(c), &doc); err != nil || doc == nil {
				t.Errorf("%v at temperature %v seed %d: %q (finish %s) does not parse: %v", rf["type"], run.temp, run.seed, c, finish, err)
			}
			if rf["type"] == "json_schema" {
				if _, ok := doc["age"].(float64); !ok {
					t.Errorf("%q lacks the required age", c)
				}
			}
		}
	}
}
