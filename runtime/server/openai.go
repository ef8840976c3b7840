package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// This file holds the OpenAI request and response shapes. Unknown request
// fields are ignored, as OpenAI's SDKs and frameworks send extras.

// StringOrList is a JSON string or array of strings ("stop", "input").
type StringOrList []string

// UnmarshalJSON accepts "x", ["x", "y"] and null.
func (s *StringOrList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*s = nil
		return nil
	}
	if b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or an array of strings")
	}
	*s = many
	return nil
}

// PromptInput is a completion prompt or embedding input: a string, an
// array of strings, an array of token ids, or an array of token-id arrays.
type PromptInput struct {
	Texts  []string
	Tokens [][]int32
}

// Len is the number of inputs.
func (p PromptInput) Len() int { return len(p.Texts) + len(p.Tokens) }

// UnmarshalJSON accepts every shape OpenAI documents.
func (p *PromptInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*p = PromptInput{}
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	switch b[0] {
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p.Texts = []string{s}
		return nil
	case '[':
	default:
		return fmt.Errorf("want a string, an array of strings, an array of token ids or an array of arrays of token ids")
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) == 0 {
		return nil
	}
	first := bytes.TrimSpace(raw[0])
	switch {
	case len(first) > 0 && first[0] == '"':
		return json.Unmarshal(b, &p.Texts)
	case len(first) > 0 && first[0] == '[':
		return json.Unmarshal(b, &p.Tokens)
	default:
		var toks []int32
		if err := json.Unmarshal(b, &toks); err != nil {
			return fmt.Errorf("want an array of strings or of token ids: %v", err)
		}
		p.Tokens = [][]int32{toks}
		return nil
	}
}

// MessageContent is a message's content: a string or an array of parts.
type MessageContent struct {
	Text  string
	Parts []ContentPart
	Null  bool
}

// ContentPart is one element of an array content.
type ContentPart struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
}

// UnmarshalJSON accepts a string, null or an array of parts.
func (c *MessageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*c = MessageContent{}
	if len(b) == 0 || string(b) == "null" {
		c.Null = true
		return nil
	}
	if b[0] == '"' {
		return json.Unmarshal(b, &c.Text)
	}
	if err := json.Unmarshal(b, &c.Parts); err != nil {
		return fmt.Errorf("want a string or an array of content parts")
	}
	return nil
}

// MarshalJSON writes a string (or null).
func (c MessageContent) MarshalJSON() ([]byte, error) {
	if c.Null {
		return []byte("null"), nil
	}
	return json.Marshal(c.String())
}

// String flattens text parts; other part types are refused by validation.
func (c MessageContent) String() string {
	if c.Parts == nil {
		return c.Text
	}
	var sb strings.Builder
	for _, p := range c.Parts {
		if p.Type == "text" {
			sb.WriteString(p.Text)
		}
	}
	return sb.String()
}

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role       string         `json:"role"`
	Content    MessageContent `json:"content"`
	Name       string         `json:"name,omitempty"`
	ToolCalls  []ToolCall     `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

// ToolCall is a function call made by the model.
type ToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// Tool is a function the model may call.
type Tool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
		Strict      bool            `json:"strict,omitempty"`
	} `json:"function"`
}

// ResponseFormat constrains the output.
type ResponseFormat struct {
	Type       string `json:"type"` // text, json_object, json_schema
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict bool            `json:"strict"`
	} `json:"json_schema,omitempty"`
}

// StreamOptions are the stream_options of a request.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// samplingFields are shared by chat and completion requests.
type samplingFields struct {
	Model            string             `json:"model"`
	MaxTokens        *int               `json:"max_tokens"`
	Temperature      *float32           `json:"temperature"`
	TopP             *float32           `json:"top_p"`
	N                *int               `json:"n"`
	Stream           bool               `json:"stream"`
	StreamOptions    *StreamOptions     `json:"stream_options"`
	Stop             StringOrList       `json:"stop"`
	PresencePenalty  *float32           `json:"presence_penalty"`
	FrequencyPenalty *float32           `json:"frequency_penalty"`
	LogitBias        map[string]float32 `json:"logit_bias"`
	Seed             *int64             `json:"seed"`
	User             string             `json:"user"`
	// llama.cpp extras.
	TopK          *int     `json:"top_k"`
	MinP          *float32 `json:"min_p"`
	RepeatPenalty *float32 `json:"repeat_penalty"`
	RepeatLastN   *int     `json:"repeat_last_n"`
	IgnoreEOS     bool     `json:"ignore_eos"`
	Grammar       string   `json:"grammar"`
}

// ChatRequest is POST /v1/chat/completions.
type ChatRequest struct {
	samplingFields
	Messages            []ChatMessage   `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            bool            `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	ResponseFormat      *ResponseFormat `json:"response_format"`
	Tools               []Tool          `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	RAG                 *RAGOptions     `json:"rag,omitempty"`
}

// RAGOptions is llmrt's extension: retrieve passages for the last user
// turn, with the retrieval stages switched on per request.
type RAGOptions struct {
	Collection string `json:"collection"`
	TopK       int    `json:"top_k"`
	// Mode is vector, hybrid (default) or keyword.
	Mode string `json:"mode"`
	// MultiQuery rewrites the question this many times with the model;
	// HyDE searches with a hypothetical answer too.
	MultiQuery int  `json:"multi_query"`
	HyDE       bool `json:"hyde"`
	// Rerank reranks the candidates with RerankModel, else the server's
	// reranking model, else the chat model itself.
	Rerank      bool   `json:"rerank"`
	RerankModel string `json:"rerank_model"`
}

// CompletionRequest is POST /v1/completions.
type CompletionRequest struct {
	samplingFields
	Prompt   PromptInput `json:"prompt"`
	Echo     bool        `json:"echo"`
	Logprobs *int        `json:"logprobs"`
	Suffix   string      `json:"suffix"`
	BestOf   *int        `json:"best_of"`
}

// EmbeddingRequest is POST /v1/embeddings.
type EmbeddingRequest struct {
	Model          string      `json:"model"`
	Input          PromptInput `json:"input"`
	EncodingFormat string      `json:"encoding_format"`
	Dimensions     *int        `json:"dimensions"`
	User           string      `json:"user"`
}

// Usage is token accounting as OpenAI reports it.
type Usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// PromptTokensDetails reports prompt tokens served from the prefix cache.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// ChatLogprobs is a chat choice's logprobs.
type ChatLogprobs struct {
	Content []ChatTokenLogprob `json:"content"`
}

// ChatTokenLogprob is one token's logprob entry.
type ChatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []ChatTopLogprob `json:"top_logprobs"`
}

// ChatTopLogprob is one alternative.
type ChatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// ChatResponseMessage is the assistant message of a choice.
type ChatResponseMessage struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"`
	Refusal   *string    `json:"refusal"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// ChatChoice is one choice of a chat completion.
type ChatChoice struct {
	Index        int                 `json:"index"`
	Message      ChatResponseMessage `json:"message"`
	Logprobs     *ChatLogprobs       `json:"logprobs"`
	FinishReason string              `json:"finish_reason"`
}

// ChatResponse is a chat.completion object.
type ChatResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []ChatChoice `json:"choices"`
	Usage             *Usage       `json:"usage,omitempty"`
	// Citations are the retrieved passages the answer cites as [n];
	// Retrieved are all of them (llmrt's "rag" extension).
	Citations []Citation `json:"citations,omitempty"`
	Retrieved []Citation `json:"retrieved,omitempty"`
}

// Citation is a retrieved passage (llmrt extension); Index is its [n] in
// the prompt.
type Citation struct {
	Index   int     `json:"index"`
	ChunkID uint64  `json:"chunk_id"`
	Source  string  `json:"source"`
	Title   string  `json:"title,omitempty"`
	Start   int     `json:"start"`
	End     int     `json:"end"`
	Score   float32 `json:"score"`
	Excerpt string  `json:"excerpt"`
}

// ChatDelta is the delta of a streamed chunk.
type ChatDelta struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// ChatChunkChoice is a choice of a streamed chunk.
type ChatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        ChatDelta     `json:"delta"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// ChatChunk is a chat.completion.chunk object.
type ChatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []ChatChunkChoice `json:"choices"`
	Usage             *Usage            `json:"usage,omitempty"`
	// Retrieved comes with the first chunk, Citations with each choice's
	// last chunk (the passages that choice cites).
	Citations []Citation `json:"citations,omitempty"`
	Retrieved []Citation `json:"retrieved,omitempty"`
}

// CompletionLogprobs is the legacy completions logprobs object.
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// CompletionChoice is one choice of a completion.
type CompletionChoice struct {
	Index        int                 `json:"index"`
	Text         string              `json:"text"`
	Logprobs     *CompletionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// CompletionResponse is a text_completion object (also its stream chunks).
type CompletionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint"`
	Choices           []CompletionChoice `json:"choices"`
	Usage             *Usage             `json:"usage,omitempty"`
}

// Embedding is one embedding of an embeddings response.
type Embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32 or base64 string
}

// EmbeddingResponse is the embeddings list.
type EmbeddingResponse struct {
	Object string      `json:"object"`
	Data   []Embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// ModelObject is an entry of GET /v1/models.
type ModelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Parent  string `json:"parent,omitempty"`
	// llmrt extensions.
	Loaded bool   `json:"loaded"`
	Kind   string `json:"kind"` // model or adapter
}

// ModelList is GET /v1/models.
type ModelList struct {
	Object string        `json:"object"`
	Data   []ModelObject `json:"data"`
}
