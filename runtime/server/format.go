package server

import (
	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/grammar"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

// applyResponseFormat turns response_format into a grammar constraint
// that also keeps the answer completable within maxTok tokens (0: no
// limit), so that JSON cut short by max_tokens still parses.
func (s *Server) applyResponseFormat(rf *ResponseFormat, sp *kernels.SamplerParams, maxTok int) *httpapi.APIError {
	if rf == nil || rf.Type == "" || rf.Type == "text" {
		return nil
	}
	if sp.Grammar != "" {
		return httpapi.BadRequest("response_format", "response_format and grammar cannot be combined")
	}
	switch rf.Type {
	case "json_object":
		sp.Grammar = grammar.JSONObject
	case "json_schema":
		if rf.JSONSchema == nil || len(rf.JSONSchema.Schema) == 0 {
			return httpapi.BadRequest("response_format.json_schema.schema", "json_schema.schema is required")
		}
		g, err := grammar.FromJSONSchema(rf.JSONSchema.Schema)
		if err != nil {
			return httpapi.BadRequest("response_format.json_schema.schema", "unsupported schema: %v", err)
		}
		sp.Grammar = g
	default:
		return httpapi.BadRequest("response_format.type", "response_format.type must be text, json_object or json_schema, got %q", rf.Type)
	}
	sp.CloseWithin = maxTok
	return nil
}
