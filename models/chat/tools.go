package chat

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

var toolCallTag = regexp.MustCompile(`(?s)<tool_call>\s*(\{.*?\})\s*</tool_call>`)

// ParseToolCalls extracts the function calls a model wrote, in the common
// formats: Hermes/Qwen <tool_call>{...}</tool_call>, Mistral
// [TOOL_CALLS][...], and a bare JSON object or array with name and
// arguments (or parameters), as Llama 3.1 writes. rest is the text outside
// the calls; ok is false when there are none.
func ParseToolCalls(text string) (calls []ToolCall, rest string, ok bool) {
	if m := toolCallTag.FindAllStringSubmatchIndex(text, -1); len(m) > 0 {
		var sb strings.Builder
		last := 0
		for i, loc := range m {
			c, ok := callFromJSON(text[loc[2]:loc[3]], i)
			if !ok {
				return nil, text, false
			}
			calls = append(calls, c)
			sb.WriteString(text[last:loc[0]])
			last = loc[1]
		}
		sb.WriteString(text[last:])
		return calls, strings.TrimSpace(sb.String()), true
	}
	t := strings.TrimSpace(text)
	if after, found := strings.CutPrefix(t, "[TOOL_CALLS]"); found {
		t = strings.TrimSpace(after)
	}
	t = strings.TrimPrefix(t, "<|python_tag|>")
	if strings.HasPrefix(t, "[") {
		var arr []json.RawMessage
		if json.Unmarshal([]byte(t), &arr) == nil && len(arr) > 0 {
			for i, raw := range arr {
				c, ok := callFromJSON(string(raw), i)
				if !ok {
					return nil, text, false
				}
				calls = append(calls, c)
			}
			return calls, "", true
		}
	}
	if strings.HasPrefix(t, "{") {
		if c, ok := callFromJSON(t, 0); ok {
			return []ToolCall{c}, "", true
		}
	}
	return nil, text, false
}

func callFromJSON(s string, i int) (ToolCall, bool) {
	var v struct {
		Name       string          `json:"name"`
		Arguments  json.RawMessage `json:"arguments"`
		Parameters json.RawMessage `json:"parameters"`
		ID         string          `json:"id"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil || v.Name == "" {
		return ToolCall{}, false
	}
	args := v.Arguments
	if len(args) == 0 {
		args = v.Parameters
	}
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	// Arguments given as a JSON string hold the JSON text already.
	var str string
	if json.Unmarshal(args, &str) == nil {
		args = json.RawMessage(str)
	}
	id := v.ID
	if id == "" {
		id = fmt.Sprintf("call_%d", i)
	}
	return ToolCall{ID: id, Name: v.Name, Arguments: string(args)}, true
}
