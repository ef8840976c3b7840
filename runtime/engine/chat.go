package engine

import (
	"encoding/json"

	"github.com/llmrt/llmrt/kernels"
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

// RenderChat renders a conversation into prompt text with the model's chat
// template; models without one use llama.cpp's built-in chatml.
func (e *Engine) RenderChat(msgs []ChatMessage, addGenerationPrompt bool) (string, error) {
	return e.RenderChatTools(msgs, nil, addGenerationPrompt)
}

// RenderChatTools is RenderChat with tools offered to the model.
func (e *Engine) RenderChatTools(msgs []ChatMessage, tools []ChatTool, addGenerationPrompt bool) (string, error) {
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

// SupportsTools reports whether the model's chat template renders tools.
func (e *Engine) SupportsTools() bool { return false }

// ParseToolCalls extracts function calls from generated text in the
// model's tool-call format; ok is false when the text holds none.
func (e *Engine) ParseToolCalls(text string) (calls []ChatToolCall, content string, ok bool) {
	return nil, text, false
}
