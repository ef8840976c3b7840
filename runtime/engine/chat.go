package engine

import (
	"encoding/json"
	"fmt"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/chat"
)

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role       string         `json:"role"`
	Content    string         `json:"content"`
	Name       string         `json:"name,omitempty"`
	ToolCalls  []ChatToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

// ChatToolCall is a function call in an assistant turn.
type ChatToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ChatTool is a function offered to the model.
type ChatTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// chatTemplate parses the model's Jinja chat template once; a template
// gonja cannot parse leaves nil and llama.cpp's built-ins take over.
func (e *Engine) chatTemplate() *chat.Template {
	e.tmplOnce.Do(func() {
		if e.info.ChatTemplate == "" {
			return
		}
		t, err := chat.Parse(e.info.ChatTemplate, e.model.TokenText(e.info.BOS), e.model.TokenText(e.info.EOS))
		if err != nil {
			e.log.Warn("chat template: using llama.cpp's built-in rendering", "err", err)
			return
		}
		e.tmpl = t
	})
	return e.tmpl
}

// RenderChat renders a conversation into prompt text with the model's chat
// template; models without one use llama.cpp's built-in chatml.
func (e *Engine) RenderChat(msgs []ChatMessage, addGenerationPrompt bool) (string, error) {
	return e.RenderChatTools(msgs, nil, addGenerationPrompt)
}

// RenderChatTools is RenderChat with tools offered to the model. The GGUF's
// Jinja template is rendered with gonja; when it cannot be (or the model
// has none), llama.cpp's built-in templates are used, which know no tools.
func (e *Engine) RenderChatTools(msgs []ChatMessage, tools []ChatTool, addGenerationPrompt bool) (string, error) {
	if t := e.chatTemplate(); t != nil {
		cm := make([]chat.Message, len(msgs))
		for i, m := range msgs {
			cm[i] = chat.Message{Role: m.Role, Content: m.Content, Name: m.Name, ToolCallID: m.ToolCallID}
			for _, c := range m.ToolCalls {
				cm[i].ToolCalls = append(cm[i].ToolCalls, chat.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
			}
		}
		ct := make([]chat.Tool, len(tools))
		for i, tl := range tools {
			ct[i] = chat.Tool{Name: tl.Name, Description: tl.Description, Parameters: tl.Parameters}
		}
		out, err := t.Render(cm, ct, addGenerationPrompt)
		if err == nil || len(tools) > 0 {
			return out, err
		}
		e.log.Debug("chat template failed; trying llama.cpp's built-in", "err", err)
	}
	if len(tools) > 0 {
		return "", fmt.Errorf("the model's chat template cannot render tools")
	}
	km := make([]kernels.ChatMessage, len(msgs))
	for i, m := range msgs {
		km[i] = kernels.ChatMessage{Role: m.Role, Content: m.Content}
	}
	tmpl := e.info.ChatTemplate
	if tmpl == "" {
		tmpl = "chatml"
	}
	return e.model.ApplyChatTemplate(tmpl, km, addGenerationPrompt)
}

// ChatTokens renders a conversation and tokenizes it exactly as serving
// and training both must: special-token text becomes special tokens, and
// a template that writes BOS itself does not get a second one.
func (e *Engine) ChatTokens(msgs []ChatMessage, tools []ChatTool, addGenerationPrompt bool) ([]int32, error) {
	text, err := e.RenderChatTools(msgs, tools, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	toks, err := e.model.Tokenize(text, true, true)
	if err != nil {
		return nil, err
	}
	if len(toks) > 1 && toks[0] == e.info.BOS && toks[1] == e.info.BOS {
		toks = toks[1:]
	}
	return toks, nil
}

// SupportsTools reports whether the model's chat template renders tools.
func (e *Engine) SupportsTools() bool {
	t := e.chatTemplate()
	return t != nil && t.SupportsTools()
}

// ParseToolCalls extracts function calls from generated text in the
// common tool-call formats; ok is false when the text holds none.
func (e *Engine) ParseToolCalls(text string) (calls []ChatToolCall, content string, ok bool) {
	cs, rest, ok := chat.ParseToolCalls(text)
	if !ok {
		return nil, text, false
	}
	for _, c := range cs {
		calls = append(calls, ChatToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
	}
	return calls, rest, true
}
