// Package chat renders conversations with a model's own chat template
// (the GGUF's tokenizer.chat_template, a Jinja2 template as Hugging Face
// transformers renders it) through gonja, a Go Jinja implementation, and
// parses the tool calls a model writes back.
//
// gonja was chosen over the alternatives because it follows Python
// Jinja's semantics closely (loops, namespaces, slicing, filters such as
// tojson and trim) and lets us add the functions chat templates expect:
// raise_exception and strftime_now. Callers fall back to llama.cpp's
// built-in templates when Parse or Render fails.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/exec"
)

// Message is one turn.
type Message struct {
	Role       string
	Content    string
	Name       string
	ToolCalls  []ToolCall
	ToolCallID string
}

// ToolCall is a function call made by the assistant.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // JSON
}

// Tool is a function offered to the model.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage
}

// Template is a parsed chat template; Render is safe for concurrent use.
type Template struct {
	src      string
	tmpl     *exec.Template
	bos, eos string
}

// Parse compiles a chat template; bos and eos are the model's special token
// texts, exposed to the template as bos_token and eos_token.
func Parse(src, bos, eos string) (t *Template, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("chat template: %v", p)
		}
	}()
	tmpl, err := gonja.FromString(src)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return &Template{src: src, tmpl: tmpl, bos: bos, eos: eos}, nil
}

// SupportsTools reports whether the template renders a tools list.
func (t *Template) SupportsTools() bool { return strings.Contains(t.src, "tools") }

// Render renders msgs (and tools) into a prompt.
func (t *Template) Render(msgs []Message, tools []Tool, addGenerationPrompt bool) (out string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("chat template: %v", p)
		}
	}()
	var raised error
	vars := map[string]any{
		"messages":              messagesValue(msgs),
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
		"raise_exception": func(msg string) string {
			raised = errors.New(msg)
			panic("raise_exception: " + msg)
		},
		"strftime_now": func(format string) string { return strftime(time.Now(), format) },
	}
	if len(tools) > 0 {
		vars["tools"] = toolsValue(tools)
	}
	out, err = t.tmpl.ExecuteToString(exec.NewContext(vars))
	if raised != nil {
		return "", fmt.Errorf("chat template refused the conversation: %w", raised)
	}
	if err != nil {
		if strings.Contains(err.Error(), "raise_exception") {
			return "", fmt.Errorf("chat template refused the conversation: %v", err)
		}
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

func messagesValue(msgs []Message) []map[string]any {
	out := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		v := map[string]any{"role": m.Role, "content": m.Content}
		if m.Name != "" {
			v["name"] = m.Name
		}
		if m.ToolCallID != "" {
			v["tool_call_id"] = m.ToolCallID
		}
		if len(m.ToolCalls) > 0 {
			var calls []map[string]any
			for _, c := range m.ToolCalls {
				var args any = map[string]any{}
				if json.Unmarshal([]byte(c.Arguments), &args) != nil {
					args = c.Arguments
				}
				calls = append(calls, map[string]any{"id": c.ID, "type": "function",
					"function": map[string]any{"name": c.Name, "arguments": args}})
			}
			v["tool_calls"] = calls
		}
		out[i] = v
	}
	return out
}

func toolsValue(tools []Tool) []map[string]any {
	out := make([]map[string]any, len(tools))
	for i, t := range tools {
		var params any = map[string]any{"type": "object", "properties": map[string]any{}}
		if len(t.Parameters) > 0 {
			json.Unmarshal(t.Parameters, &params)
		}
		out[i] = map[string]any{"type": "function", "function": map[string]any{
			"name": t.Name, "description": t.Description, "parameters": params}}
	}
	return out
}

func strftime(t time.Time, f string) string {
	r := strings.NewReplacer("%Y", "2006", "%m", "01", "%d", "02", "%H", "15", "%M", "04", "%S", "05", "%b", "Jan", "%B", "January", "%a", "Mon", "%A", "Monday", "%y", "06")
	return t.Format(r.Replace(f))
}
