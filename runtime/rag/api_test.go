package rag

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// ragServer runs a real llmrt server on 127.0.0.1 with stories260K as the
// chat and embedding model, a collection store, the /v1/collections API
// and the chat "rag" extension.
func ragServer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(dir, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 1024, Threads: 2}})
	store, err := OpenStore(filepath.Join(dir, "collections"), StoreOptions{Embedder: RegistryEmbedder{Reg: reg, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet,
		Retriever: &Retriever{Store: store}}, reg)
	(&API{Store: store}).Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		store.Close()
		reg.Close()
	})
	return "http://" + ln.Addr().String()
}

func call(t *testing.T, method, url string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case *multipart.Writer:
		t.Fatal("use upload")
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", ct)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

const (
	lilyText = "# Lily\n\nLily was a little girl who loved to play outside in the sun with her dog. The dog was named Max and liked to chase the red ball.\n"
	tomText  = "Tom lived by the sea. Every morning he went fishing in a small blue boat with his grandfather, who told him stories about the whales."
)

func TestCollectionsAPIAndChatRAG(t *testing.T) {
	url := ragServer(t) + "/v1/collections"

	code, out := call(t, "POST", url, map[string]any{"name": "handbook", "chunk_size": 200, "chunk_overlap": 16})
	if code != http.StatusCreated || out["id"] != "handbook" || out["dim"] != float64(64) {
		t.Fatalf("create: %d %v", code, out)
	}
	if code, out = call(t, "POST", url, map[string]any{"name": "handbook"}); code != http.StatusConflict || errCode(out) != "collection_exists" {
		t.Fatalf("create twice: %d %v", code, out)
	}
	if code, out = call(t, "POST", url, map[string]any{"name": "../etc"}); code != http.StatusBadRequest {
		t.Fatalf("bad name: %d %v", code, out)
	}
	if code, out = call(t, "POST", url, []byte(`{"name": `)); code != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d %v", code, out)
	}

	code, out = call(t, "POST", url+"/handbook/documents", map[string]any{"documents": []map[string]any{
		{"name": "lily.md", "text": lilyText}, {"name": "tom", "text": tomText}}})
	if code != http.StatusOK || len(out["added"].([]any)) != 2 || out["chunks"].(float64) < 2 {
		t.Fatalf("add documents: %d %v", code, out)
	}
	// The same texts again change nothing.
	code, out = call(t, "POST", url+"/handbook/documents", map[string]any{"documents": []map[string]any{{"name": "lily.md", "text": lilyText}}})
	if code != http.StatusOK || len(out["unchanged"].([]any)) != 1 || len(out["added"].([]any)) != 0 {
		t.Fatalf("re-add: %d %v", code, out)
	}
	// Server-side paths are refused unless the server allows them.
	if code, out = call(t, "POST", url+"/handbook/documents", map[string]any{"path": "/etc"}); code != http.StatusBadRequest {
		t.Fatalf("path ingestion without permission: %d %v", code, out)
	}

	// A multipart upload.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "sea.txt")
	fw.Write([]byte("The lighthouse keeper counted the ships that passed at night."))
	mw.Close()
	req, _ := http.NewRequest("POST", url+"/handbook/documents", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), "sea.txt") {
		t.Fatalf("upload: %d %s", resp.StatusCode, raw)
	}

	// A passage's exact sentence finds that passage first.
	sentence := "Every morning he went fishing in a small blue boat with his grandfather"
	code, out = call(t, "POST", url+"/handbook/query", map[string]any{"query": sentence, "top_k": 3, "mode": "hybrid"})
	hits, _ := out["data"].([]any)
	if code != http.StatusOK || len(hits) == 0 {
		t.Fatalf("query: %d %v", code, out)
	}
	first := hits[0].(map[string]any)["chunk"].(map[string]any)
	if first["source"] != "tom" || !strings.Contains(first["text"].(string), sentence) {
		t.Fatalf("first hit %v, want the passage of tom", first)
	}
	if code, out = call(t, "POST", url+"/nope/query", map[string]any{"query": "x"}); code != http.StatusNotFound || errCode(out) != "collection_not_found" {
		t.Fatalf("unknown collection: %d %v", code, out)
	}

	// Chat with the rag extension: the retrieved passages come back with
	// the answer, and citations holds those the answer cites as [n].
	chat := ragServerChat(t, strings.TrimSuffix(url, "/collections"), map[string]any{
		"model": "stories260K", "max_tokens": 8, "temperature": 0,
		"messages": []map[string]any{{"role": "user", "content": sentence}},
		"rag":      map[string]any{"collection": "handbook", "top_k": 2},
	})
	got, _ := chat["retrieved"].([]any)
	if len(got) == 0 {
		t.Fatalf("chat with rag: no retrieved passages in %v", chat)
	}
	c0 := got[0].(map[string]any)
	if c0["source"] != "tom" || c0["index"] != float64(1) {
		t.Fatalf("first retrieved passage %v, want source tom as [1]", c0)
	}
	answer := chat["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
	cits, _ := chat["citations"].([]any)
	for _, c := range cits {
		if n := c.(map[string]any)["index"].(float64); !strings.Contains(answer, fmt.Sprintf("[%d]", int(n))) {
			t.Fatalf("citation [%v] is not in the answer %q", n, answer)
		}
	}
	// An answer that cites [2] (a grammar makes the model write it) has
	// exactly the second retrieved passage as its citation.
	chat = ragServerChat(t, strings.TrimSuffix(url, "/collections"), map[string]any{
		"model": "stories260K", "max_tokens": 16, "temperature": 0, "grammar": `root ::= "He went fishing [2]."`,
		"messages": []map[string]any{{"role": "user", "content": sentence}},
		"rag":      map[string]any{"collection": "handbook", "top_k": 2},
	})
	got, _ = chat["retrieved"].([]any)
	cits, _ = chat["citations"].([]any)
	if len(got) != 2 || len(cits) != 1 {
		t.Fatalf("answer citing [2]: retrieved %v, citations %v", got, cits)
	}
	if c := cits[0].(map[string]any); c["index"] != float64(2) || c["source"] != got[1].(map[string]any)["source"] || c["chunk_id"] != got[1].(map[string]any)["chunk_id"] {
		t.Fatalf("citation %v, want the second retrieved passage %v", c, got[1])
	}
	// Streamed: the retrieved passages come with the first chunk, the
	// answer's citations with its last.
	j, _ := json.Marshal(map[string]any{
		"model": "stories260K", "max_tokens": 16, "temperature": 0, "grammar": `root ::= "He went fishing [2]."`, "stream": true,
		"messages": []map[string]any{{"role": "user", "content": sentence}},
		"rag":      map[string]any{"collection": "handbook", "top_k": 2},
	})
	resp, err = http.Post(strings.TrimSuffix(url, "/collections")+"/chat/completions", "application/json", bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var events []map[string]any
	for _, line := range strings.Split(string(raw), "\n") {
		if data, ok := strings.CutPrefix(line, "data: "); ok && data != "[DONE]" {
			var ev map[string]any
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("event %s: %v", data, err)
			}
			events = append(events, ev)
		}
	}
	if len(events) < 2 {
		t.Fatalf("stream: %s", raw)
	}
	if r, _ := events[0]["retrieved"].([]any); len(r) != 2 {
		t.Fatalf("first chunk %v lacks the retrieved passages", events[0])
	}
	var lastCits []any
	for _, ev := range events {
		for _, ch := range ev["choices"].([]any) {
			if ch.(map[string]any)["finish_reason"] != nil {
				lastCits, _ = ev["citations"].([]any)
			}
		}
	}
	if len(lastCits) != 1 || lastCits[0].(map[string]any)["index"] != float64(2) {
		t.Fatalf("last chunk's citations %v, want [2]", lastCits)
	}
	bad := ragServerChatStatus(t, strings.TrimSuffix(url, "/collections"), map[string]any{
		"messages": []map[string]any{{"role": "user", "content": "hi"}}, "rag": map[string]any{"collection": "missing"}})
	if bad != http.StatusNotFound {
		t.Fatalf("rag on a missing collection: %d", bad)
	}

	// A source's chunks, in document order.
	code, out = call(t, "GET", url+"/handbook/chunks?source=tom", nil)
	chunks, _ := out["data"].([]any)
	if code != http.StatusOK || len(chunks) == 0 {
		t.Fatalf("chunks: %d %v", code, out)
	}
	var joined strings.Builder
	prev := -1.0
	for _, c := range chunks {
		m := c.(map[string]any)
		if m["source"] != "tom" || m["start"].(float64) < prev {
			t.Fatalf("chunk %v out of place", m)
		}
		prev = m["start"].(float64)
		joined.WriteString(m["text"].(string))
	}
	if !strings.Contains(joined.String(), sentence) {
		t.Fatalf("the chunks of tom do not hold its text: %q", joined.String())
	}
	if code, out = call(t, "GET", url+"/handbook/chunks?source=nobody", nil); code != http.StatusNotFound || errCode(out) != "source_not_found" {
		t.Fatalf("chunks of an unknown source: %d %v", code, out)
	}

	// Removing a source drops its chunks from retrieval.
	if code, out = call(t, "DELETE", url+"/handbook/documents?source=tom", nil); code != http.StatusOK {
		t.Fatalf("remove source: %d %v", code, out)
	}
	_, out = call(t, "POST", url+"/handbook/query", map[string]any{"query": sentence, "top_k": 5, "mode": "hybrid"})
	for _, h := range out["data"].([]any) {
		if h.(map[string]any)["chunk"].(map[string]any)["source"] == "tom" {
			t.Fatal("a removed source was retrieved")
		}
	}
	if code, out = call(t, "GET", url, nil); code != http.StatusOK || len(out["data"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, out)
	}
	if code, out = call(t, "GET", url+"/handbook", nil); code != http.StatusOK || out["documents"] != float64(2) {
		t.Fatalf("stats: %d %v", code, out)
	}
	if code, _ = call(t, "DELETE", url+"/handbook", nil); code != http.StatusOK {
		t.Fatalf("delete: %d", code)
	}
	if code, out = call(t, "GET", url+"/handbook", nil); code != http.StatusNotFound {
		t.Fatalf("get after delete: %d %v", code, out)
	}
}

func ragServerChatStatus(t *testing.T, base string, body any) int {
	j, _ := json.Marshal(body)
	resp, err := http.Post(base+"/chat/completions", "application/json", bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func ragServerChat(t *testing.T, base string, body any) map[string]any {
	j, _ := json.Marshal(body)
	resp, err := http.Post(base+"/chat/completions", "application/json", bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("chat: %d %s", resp.StatusCode, raw)
	}
	return out
}
