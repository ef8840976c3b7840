package rag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/index"
)

// API serves a Store over HTTP under /v1/collections:
//
//	POST   /v1/collections                          create {name, model, metric, chunk_size, chunk_overlap}
//	GET    /v1/collections                          list
//	GET    /v1/collections/{name}                   stats and sources
//	DELETE /v1/collections/{name}                   delete
//	POST   /v1/collections/{name}/documents         add: JSON {path} | {documents: [{name, text, format}]},
//	                                                or multipart/form-data files
//	DELETE /v1/collections/{name}/documents?source= remove one source
//	GET    /v1/collections/{name}/chunks?source=    one source's chunks in document order
//	POST   /v1/collections/{name}/query             {query, top_k, mode, mmr}
type API struct {
	Store *Store
	// AllowPaths lets {"path": ...} ingest files that the server process
	// can read. Off, only uploaded documents are accepted.
	AllowPaths bool
	// mu serialises collection creation and deletion against ingestion.
	mu sync.Mutex
}

// Router registers routes with the HTTP layer (runtime/server's Server):
// auth, limits, metrics and OpenAI-shaped errors come with it.
type Router interface {
	Handle(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
	HandleUpload(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
}

// Register adds the collection routes to srv.
func (a *API) Register(srv Router) {
	srv.Handle("POST /v1/collections", "collections", a.create)
	srv.Handle("GET /v1/collections", "collections", a.list)
	srv.Handle("GET /v1/collections/{name}", "collections", a.get)
	srv.Handle("DELETE /v1/collections/{name}", "collections", a.delete)
	srv.HandleUpload("POST /v1/collections/{name}/documents", "collections", a.addDocuments)
	srv.Handle("DELETE /v1/collections/{name}/documents", "collections", a.removeDocument)
	srv.Handle("POST /v1/collections/{name}/query", "collections", a.query)
	srv.Handle("GET /v1/collections/{name}/chunks", "collections", a.chunks)
}

func (a *API) chunks(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	src := r.URL.Query().Get("source")
	if src == "" {
		return httpapi.BadRequest("source", "the source query parameter names the document whose chunks to list")
	}
	c, err := a.Store.Get(r.Context(), name)
	if err != nil {
		return a.errOf(name, err)
	}
	cs := c.Chunks(src)
	if cs == nil {
		return httpapi.NotFound("source_not_found", "collection %q has no source %q", name, src)
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": cs})
}

// CollectionObject is a collection in API answers.
type CollectionObject struct {
	ID     string `json:"id"`
	Object string `json:"object"` // "collection"
	Stats
	Sources []SourceInfo `json:"sources,omitempty"`
}

type createRequest struct {
	Name         string `json:"name"`
	Model        string `json:"model"`
	Metric       string `json:"metric"`
	ChunkSize    int    `json:"chunk_size"`
	ChunkOverlap int    `json:"chunk_overlap"`
}

func (a *API) errOf(name string, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("collection_not_found", "collection %q does not exist", name)
	case errors.Is(err, ErrExists):
		return httpapi.Conflict("collection_exists", "collection %q already exists", name)
	case errors.Is(err, ErrNoEmbedder):
		return httpapi.Unavailable(0, "the server has no embedding model for collections")
	case errors.Is(err, ErrModelMismatch), errors.Is(err, ErrLocked), errors.Is(err, ErrReadOnly):
		return httpapi.Conflict("collection_unavailable", "collection %q: %v", name, err)
	}
	return err
}

func (a *API) create(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := CheckName(req.Name); err != nil {
		return httpapi.BadRequest("name", "%v", err)
	}
	if req.Metric != "" {
		if _, err := index.ParseMetric(req.Metric); err != nil {
			return httpapi.BadRequest("metric", "%v", err)
		}
	}
	if req.ChunkSize < 0 || req.ChunkOverlap < 0 || (req.ChunkSize > 0 && req.ChunkOverlap >= req.ChunkSize) {
		return httpapi.BadRequest("chunk_overlap", "chunk_size must be positive and chunk_overlap smaller than it")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, err := a.Store.Create(r.Context(), req.Name, CreateOptions{Model: req.Model, Metric: req.Metric, Chunking: ChunkOptions{Size: req.ChunkSize, Overlap: req.ChunkOverlap}})
	if err != nil {
		if strings.Contains(err.Error(), "over the embedding model's limit") {
			return httpapi.BadRequest("chunk_size", "%v", err)
		}
		return a.errOf(req.Name, err)
	}
	st, err := c.Stats()
	if err != nil {
		return err
	}
	return httpapi.WriteJSON(w, http.StatusCreated, CollectionObject{ID: st.Name, Object: "collection", Stats: st})
}

func (a *API) list(w http.ResponseWriter, r *http.Request) error {
	ms, err := a.Store.List()
	if err != nil {
		return err
	}
	data := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		data = append(data, map[string]any{"id": m.Name, "object": "collection", "model": m.Model, "dim": m.Dim,
			"metric": m.Metric, "created": m.Created.Unix()})
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	c, err := a.Store.Get(r.Context(), name)
	if err != nil {
		return a.errOf(name, err)
	}
	st, err := c.Stats()
	if err != nil {
		return err
	}
	return httpapi.WriteJSON(w, http.StatusOK, CollectionObject{ID: name, Object: "collection", Stats: st, Sources: c.Sources()})
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.Store.Delete(name); err != nil {
		return a.errOf(name, err)
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": name, "object": "collection", "deleted": true})
}

type docInput struct {
	Name   string `json:"name"`
	Text   string `json:"text"`
	Format string `json:"format"` // text, markdown or html (default from the name's extension, else text)
}

type addRequest struct {
	Path      string     `json:"path"`
	Documents []docInput `json:"documents"`
	Prune     bool       `json:"prune"`
}

// AddResponse reports an ingestion.
type AddResponse struct {
	Object    string       `json:"object"` // "collection.ingestion"
	Added     []string     `json:"added"`
	Updated   []string     `json:"updated"`
	Unchanged []string     `json:"unchanged"`
	Removed   []string     `json:"removed"`
	Failed    []failedFile `json:"failed"`
	Chunks    int          `json:"chunks"`
	Tokens    int          `json:"tokens"`
}

type failedFile struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

func (a *API) addDocuments(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	c, err := a.Store.Get(r.Context(), name)
	if err != nil {
		return a.errOf(name, err)
	}
	var docs []Document
	var req addRequest
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		if docs, err = readUploads(r); err != nil {
			return err
		}
	} else {
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return err
		}
		if (req.Path == "") == (len(req.Documents) == 0) {
			return httpapi.BadRequest("documents", "give either \"path\" or \"documents\"")
		}
		for i, d := range req.Documents {
			doc, err := parseInput(r.Context(), d)
			if err != nil {
				return httpapi.BadRequest(fmt.Sprintf("documents[%d]", i), "%v", err)
			}
			docs = append(docs, doc)
		}
	}
	var rep AddReport
	if req.Path != "" {
		if !a.AllowPaths {
			return httpapi.BadRequest("path", "this server does not ingest server-side paths (start it with --rag-allow-paths); upload the documents instead")
		}
		if _, err := os.Stat(req.Path); err != nil {
			return httpapi.BadRequest("path", "%v", err)
		}
		rep, err = c.AddPath(r.Context(), req.Path, AddOptions{Prune: req.Prune})
	} else {
		for _, d := range docs {
			one, err1 := c.AddDocument(r.Context(), d, "", AddOptions{})
			rep.Merge(one)
			if err1 != nil {
				err = err1
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("ingest into %s: %w", name, err)
	}
	out := AddResponse{Object: "collection.ingestion", Added: nonNil(rep.Added), Updated: nonNil(rep.Updated),
		Unchanged: nonNil(rep.Unchanged), Removed: nonNil(rep.Removed), Failed: []failedFile{}, Chunks: rep.Chunks, Tokens: rep.Tokens}
	for _, f := range rep.Failed {
		out.Failed = append(out.Failed, failedFile{Path: f.Path, Error: f.Err.Error()})
	}
	return httpapi.WriteJSON(w, http.StatusOK, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// parseInput turns an uploaded text into a document named by its name.
func parseInput(ctx context.Context, d docInput) (Document, error) {
	if strings.TrimSpace(d.Name) == "" {
		return Document{}, errors.New("name is required")
	}
	name := d.Name
	switch d.Format {
	case "":
		if FormatOf(name) == "" {
			name += ".txt"
		}
	case "text":
		name += ".txt"
	case "markdown":
		name += ".md"
	case "html":
		name += ".html"
	default:
		return Document{}, fmt.Errorf("format %q: want text, markdown or html", d.Format)
	}
	doc, err := ParseDocument(ctx, name, []byte(d.Text))
	if err != nil {
		return Document{}, err
	}
	doc.Source = d.Name
	return doc, nil
}

// maxUpload bounds one uploaded file (the server's body limit applies too).
const maxUpload = 64 << 20

func readUploads(r *http.Request) ([]Document, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, httpapi.BadRequest("", "malformed multipart body: %v", err)
	}
	var docs []Document
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, httpapi.BadRequest("", "malformed multipart body: %v", err)
		}
		if p.FileName() == "" {
			continue
		}
		name := filepath.Base(p.FileName())
		data, err := io.ReadAll(io.LimitReader(p, maxUpload+1))
		if err != nil {
			return nil, httpapi.BadRequest("file", "reading %s: %v", name, err)
		}
		if len(data) > maxUpload {
			return nil, httpapi.BadRequest("file", "%s is larger than %d bytes", name, maxUpload)
		}
		doc, err := ParseDocument(r.Context(), name, data)
		if err != nil {
			return nil, httpapi.BadRequest("file", "%v", err)
		}
		doc.Source = name
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		return nil, httpapi.BadRequest("file", "no files in the upload")
	}
	return docs, nil
}

func (a *API) removeDocument(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	src := r.URL.Query().Get("source")
	if src == "" {
		return httpapi.BadRequest("source", "the source query parameter names the document to remove")
	}
	c, err := a.Store.Get(r.Context(), name)
	if err != nil {
		return a.errOf(name, err)
	}
	if err := c.RemoveSource(r.Context(), src); err != nil {
		if errors.Is(err, ErrNoSource) {
			return httpapi.NotFound("source_not_found", "collection %q has no source %q", name, src)
		}
		return err
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": src, "object": "collection.document", "deleted": true})
}

type queryRequest struct {
	Query string  `json:"query"`
	TopK  int     `json:"top_k"`
	Mode  string  `json:"mode"`
	MMR   float64 `json:"mmr"`
}

func (a *API) query(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var req queryRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Query) == "" {
		return httpapi.BadRequest("query", "query is required")
	}
	if req.TopK < 0 || req.TopK > 100 {
		return httpapi.BadRequest("top_k", "top_k must be between 1 and 100, got %d", req.TopK)
	}
	if req.MMR < 0 || req.MMR > 1 {
		return httpapi.BadRequest("mmr", "mmr must be in [0, 1], got %g", req.MMR)
	}
	opt := SearchOptions{K: req.TopK, MMR: req.MMR}
	if req.Mode != "" {
		m, err := ParseMode(req.Mode)
		if err != nil {
			return httpapi.BadRequest("mode", "%v", err)
		}
		opt.Mode = m
	}
	c, err := a.Store.Get(r.Context(), name)
	if err != nil {
		return a.errOf(name, err)
	}
	hits, err := c.Search(r.Context(), req.Query, opt)
	if err != nil {
		return fmt.Errorf("search %s: %w", name, err)
	}
	if hits == nil {
		hits = []Hit{}
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": hits})
}
