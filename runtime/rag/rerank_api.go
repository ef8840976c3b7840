package rag

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// RerankAPI serves POST /v1/rerank (and llama.cpp's server's aliases
// /rerank and /v1/reranking) in the shape llama-server, Jina and Cohere
// use:
//
//	{"model", "query", "documents": ["text" | {"text"}], "top_n", "return_documents"}
//	-> {"object": "list", "model", "results": [{"index", "relevance_score", "document"}], "usage"}
//
// Results are ordered by relevance, best first. A reranking GGUF (rank
// pooling) scores with its classification head; any other model scores as
// a chat model (EngineReranker).
type RerankAPI struct {
	Reg Leaser
	// DefaultModel answers requests that name no model.
	DefaultModel string
}

// Register adds the rerank routes to srv.
func (a *RerankAPI) Register(srv Router) {
	for _, p := range []string{"/v1/rerank", "/rerank", "/v1/reranking"} {
		srv.Handle("POST "+p, "rerank", a.rerank)
	}
}

// maxRerankDocs bounds one request's documents.
const maxRerankDocs = 1000

// rerankDoc is a document as a string or as {"text": ...}.
type rerankDoc struct{ Text string }

func (d *rerankDoc) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &d.Text)
	}
	var o struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(b, &o); err != nil || o.Text == nil {
		return fmt.Errorf("a document is a string or an object with \"text\"")
	}
	d.Text = *o.Text
	return nil
}

type rerankRequest struct {
	Model           string      `json:"model"`
	Query           string      `json:"query"`
	Documents       []rerankDoc `json:"documents"`
	TopN            *int        `json:"top_n"`
	ReturnDocuments bool        `json:"return_documents"`
}

// RerankResult is one document's score.
type RerankResult struct {
	Index          int          `json:"index"`
	RelevanceScore float32      `json:"relevance_score"`
	Document       *rerankShown `json:"document,omitempty"`
}

type rerankShown struct {
	Text string `json:"text"`
}

func (a *RerankAPI) rerank(w http.ResponseWriter, r *http.Request) error {
	var req rerankRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Query) == "" {
		return httpapi.BadRequest("query", "query is required")
	}
	if len(req.Documents) == 0 || len(req.Documents) > maxRerankDocs {
		return httpapi.BadRequest("documents", "documents must hold 1 to %d documents, got %d", maxRerankDocs, len(req.Documents))
	}
	n := len(req.Documents)
	if req.TopN != nil {
		if *req.TopN < 1 {
			return httpapi.BadRequest("top_n", "top_n must be positive, got %d", *req.TopN)
		}
		n = min(n, *req.TopN)
	}
	model := req.Model
	if model == "" {
		model = a.DefaultModel
	}
	if model == "" {
		return httpapi.BadRequest("model", "model is required")
	}
	lease, err := a.Reg.Acquire(r.Context(), model)
	if err != nil {
		return httpapi.MapError(err, "model")
	}
	defer lease.Release()
	docs := make([]string, len(req.Documents))
	tokens := 0
	for i, d := range req.Documents {
		docs[i] = d.Text
		in, err := lease.Engine.RankInput(req.Query, d.Text)
		if err != nil {
			return httpapi.BadRequest(fmt.Sprintf("documents[%d]", i), "%v", err)
		}
		tokens += len(in)
	}
	scores, err := EngineReranker{E: lease.Engine, Adapters: lease.Adapters, Model: model}.Rerank(r.Context(), req.Query, docs)
	if err != nil {
		return httpapi.MapError(err, "documents")
	}
	res := make([]RerankResult, len(docs))
	for i := range docs {
		res[i] = RerankResult{Index: i, RelevanceScore: scores[i]}
		if req.ReturnDocuments {
			res[i].Document = &rerankShown{Text: docs[i]}
		}
	}
	sort.SliceStable(res, func(i, j int) bool { return res[i].RelevanceScore > res[j].RelevanceScore })
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"id": httpapi.NewID("rerank-"), "object": "list", "model": model, "results": res[:n],
		"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens},
	})
}
