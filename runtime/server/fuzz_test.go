package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// FuzzDecodeRequests feeds arbitrary bodies to the request decoders and the
// validation that runs before a model is touched. Nothing may panic, and
// every refusal must be a well-formed OpenAI error.
func FuzzDecodeRequests(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}],"n":3,"stop":["x","y"]}`,
		`{"prompt":[[1,2,3],[4]],"logit_bias":{"5":-100},"temperature":0.2,"top_p":0.5,"max_tokens":4}`,
		`{"prompt":["a","b"],"stop":"\n","seed":-1,"presence_penalty":3}`,
		`{"input":[1,2,3],"encoding_format":"base64","dimensions":64}`,
		`{"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}`,
		`{"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"auto"}`,
		`[1,2`, `null`, `{"n":1e400}`, `{"prompt":{"x":1}}`, `{"stop":[1,2]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(v any, validate func() *httpapi.APIError) {
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			if aerr := httpapi.Decode(req, v); aerr != nil {
				checkAPIError(t, aerr)
				return
			}
			if aerr := validate(); aerr != nil {
				checkAPIError(t, aerr)
			}
		}
		var chat ChatRequest
		check(&chat, func() *httpapi.APIError {
			if _, aerr := chat.samplerParams(512); aerr != nil {
				return aerr
			}
			if _, aerr := chat.choices(); aerr != nil {
				return aerr
			}
			if _, aerr := chat.stops(); aerr != nil {
				return aerr
			}
			_, aerr := maxTokensOf(chat.MaxCompletionTokens, chat.MaxTokens)
			return aerr
		})
		var comp CompletionRequest
		check(&comp, func() *httpapi.APIError {
			_, aerr := comp.samplerParams(512)
			return aerr
		})
		var emb EmbeddingRequest
		check(&emb, func() *httpapi.APIError { return nil })
	})
}

func checkAPIError(t *testing.T, e *httpapi.APIError) {
	t.Helper()
	if e.Status < 400 || e.Status > 599 || e.Message == "" || e.Type == "" {
		t.Fatalf("malformed API error %+v", e)
	}
	rec := httptest.NewRecorder()
	httpapi.WriteError(rec, e)
	var out struct{ Error map[string]any }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Error["message"] == nil {
		t.Fatalf("error body is not OpenAI's shape: %s", rec.Body.String())
	}
}
