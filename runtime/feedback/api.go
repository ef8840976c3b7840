package feedback

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// Router registers routes with the HTTP layer (runtime/server's Server).
type Router interface {
	Handle(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
}

// API serves the store over HTTP:
//
//	POST /v1/feedback                    a rating, correction or preference
//	GET  /v1/feedback                    list (?completion_id, type, source, model, limit, after)
//	GET  /v1/feedback/export             JSONL: ?format=raw (default), sft or dpo; ?model=BASE
//	GET  /v1/feedback/completions/{id}   a served completion as recorded
//	POST /v1/feedback/judge              {"completion_id", "model"}: the judge scores it now
type API struct {
	Store *Store
	// Judge scores on demand (its Model is the default judge model).
	Judge *Judge
}

// Register adds the feedback routes to srv.
func (a *API) Register(srv Router) {
	srv.Handle("POST /v1/feedback", "feedback", a.add)
	srv.Handle("GET /v1/feedback", "feedback", a.list)
	srv.Handle("GET /v1/feedback/export", "feedback", a.export)
	srv.Handle("GET /v1/feedback/completions/{id}", "feedback", a.completion)
	srv.Handle("POST /v1/feedback/judge", "feedback", a.judge)
}

func apiError(err error) error {
	var ie *InputError
	if errors.As(err, &ie) {
		if ie.NotFound {
			return &httpapi.APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Message: ie.Msg, Param: httpapi.Ptr(ie.Field),
				Code: httpapi.Ptr("completion_not_found")}
		}
		return httpapi.BadRequest(ie.Field, "%s", ie.Msg)
	}
	return err
}

func (a *API) add(w http.ResponseWriter, r *http.Request) error {
	var f Feedback
	if err := httpapi.DecodeJSON(r, &f); err != nil {
		return err
	}
	if f.Judge != nil || f.Completion != nil || f.Other != nil || f.ID != "" {
		return httpapi.BadRequest("", "id, judge, completion and other_completion are set by the server")
	}
	f.Created = 0
	out, err := a.Store.Add(f)
	if err != nil {
		return apiError(err)
	}
	return httpapi.WriteJSON(w, http.StatusOK, out)
}

func filterOf(r *http.Request) Filter {
	q := r.URL.Query()
	fl := Filter{CompletionID: q.Get("completion_id"), Type: q.Get("type"), Source: q.Get("source"), Base: q.Get("model")}
	if v, err := strconv.ParseInt(q.Get("since"), 10, 64); err == nil {
		fl.Since = v
	}
	return fl
}

func (a *API) list(w http.ResponseWriter, r *http.Request) error {
	items := a.Store.List(filterOf(r))
	// Newest first, after ?after= and at most ?limit= (default 20, max 1000).
	for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
		items[i], items[j] = items[j], items[i]
	}
	limit := 20
	if v, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && v > 0 && v <= 1000 {
		limit = v
	}
	if after := r.URL.Query().Get("after"); after != "" {
		for i, it := range items {
			if it.ID == after {
				items = items[i+1:]
				break
			}
		}
	}
	more := len(items) > limit
	if more {
		items = items[:limit]
	}
	if items == nil {
		items = []Feedback{}
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": items, "has_more": more})
}

func (a *API) export(w http.ResponseWriter, r *http.Request) error {
	items := a.Store.List(filterOf(r))
	format := r.URL.Query().Get("format")
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="feedback-`+time.Now().UTC().Format("20060102-150405")+`.jsonl"`)
	switch format {
	case "", "raw":
		return WriteJSONL(w, items)
	case "sft":
		return WriteJSONL(w, SFT(items))
	case "dpo":
		return WriteJSONL(w, Pairs(items))
	}
	w.Header().Del("Content-Disposition")
	return httpapi.BadRequest("format", "format must be raw, sft or dpo, got %q", format)
}

func (a *API) completion(w http.ResponseWriter, r *http.Request) error {
	c, err := a.Store.Completion(r.PathValue("id"))
	if err != nil {
		return httpapi.NotFound("completion_not_found", "%v", err)
	}
	return httpapi.WriteJSON(w, http.StatusOK, c)
}

func (a *API) judge(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		CompletionID string `json:"completion_id"`
		Model        string `json:"model"`
		Instructions string `json:"instructions"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if a.Judge == nil || a.Judge.Gen == nil {
		return httpapi.BadRequest("model", "this server has no judge (start it with --judge-model)")
	}
	j := *a.Judge
	if req.Model != "" {
		j.Model = req.Model
	}
	if req.Instructions != "" {
		j.Instructions = req.Instructions
	}
	if j.Model == "" {
		return httpapi.BadRequest("model", "no judge model: name one in \"model\" or start the server with --judge-model")
	}
	out, err := a.Store.JudgeCompletion(r.Context(), &j, req.CompletionID)
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			return apiError(err)
		}
		return httpapi.MapError(err, "model")
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out, "has_more": false})
}
