package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/testmodel"
)

func stories(t *testing.T) ([]byte, string) {
	t.Helper()
	b, err := os.ReadFile(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// server serves data with Range support; cutAfter > 0 closes the
// connection after that many bytes of each response (first cuts only).
func server(t *testing.T, data []byte, cuts int, cutAfter int, honourRange bool) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	var cutsLeft atomic.Int32
	cutsLeft.Store(int32(cuts))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !strings.HasSuffix(r.URL.Path, ".gguf") {
			http.NotFound(w, r)
			return
		}
		start := 0
		if rg := r.Header.Get("Range"); rg != "" && honourRange {
			start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
			w.Header().Set("Content-Length", strconv.Itoa(len(data)-start))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		}
		body := data[start:]
		if cutsLeft.Add(-1) >= 0 && cutAfter < len(body) {
			w.Write(body[:cutAfter])
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestPullResumesAfterCut(t *testing.T) {
	data, sum := stories(t)
	srv, hits := server(t, data, 2, 300000, true)
	s, _ := Open(t.TempDir())
	var last int64
	m, err := s.Pull(context.Background(), srv.URL+"/m/stories260K.gguf", PullOptions{SHA256: sum, Progress: func(d, tot int64) {
		if d < last {
			t.Errorf("progress went back %d -> %d", last, d)
		}
		last = d
	}})
	if err != nil {
		t.Fatal(err)
	}
	if m.SHA256 != sum || m.Name != "stories260K" || hits.Load() != 3 || last != int64(len(data)) {
		t.Fatalf("model %+v, %d requests, last progress %d", m, hits.Load(), last)
	}
	got, _ := os.ReadFile(m.Path)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("stored file differs")
	}
	if p, err := s.Resolve("stories260K"); err != nil || p != m.Path {
		t.Fatalf("resolve: %v", err)
	}
	list, _ := s.List()
	if len(list) != 1 || list[0].SHA256 != sum {
		t.Fatalf("list %+v", list)
	}
}

func TestPullRestartsWhenRangeIgnored(t *testing.T) {
	data, sum := stories(t)
	srv, _ := server(t, data, 1, 100000, false)
	s, _ := Open(t.TempDir())
	if _, err := s.Pull(context.Background(), srv.URL+"/stories260K.gguf", PullOptions{SHA256: sum}); err != nil {
		t.Fatal(err)
	}
}

func TestPullRefusesDigestMismatch(t *testing.T) {
	data, _ := stories(t)
	srv, _ := server(t, data, 0, 0, true)
	dir := t.TempDir()
	s, _ := Open(dir)
	wrong := strings.Repeat("0", 64)
	_, err := s.Pull(context.Background(), srv.URL+"/stories260K.gguf", PullOptions{SHA256: wrong})
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("mismatch: %v", err)
	}
	var files []string
	filepath.Walk(filepath.Join(dir, "models"), func(p string, info os.FileInfo, err error) error {
		if info != nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files left in the store: %v", files)
	}
}

func TestPullMirrors(t *testing.T) {
	data, sum := stories(t)
	origin, originHits := server(t, data, 0, 0, true)
	// A directory mirror: the shared models folder.
	s, _ := Open(t.TempDir())
	m, err := s.Pull(context.Background(), origin.URL+"/x/stories260K.gguf", PullOptions{SHA256: sum, Mirror: testmodel.SharedDir()})
	if err != nil || m.SHA256 != sum || originHits.Load() != 0 {
		t.Fatalf("dir mirror: %v, origin hit %d times", err, originHits.Load())
	}
	// A URL mirror.
	mirror, mirrorHits := server(t, data, 0, 0, true)
	s2, _ := Open(t.TempDir())
	if _, err := s2.Pull(context.Background(), "hf://owner/repo/stories260K.gguf", PullOptions{SHA256: sum, Mirror: mirror.URL}); err != nil || mirrorHits.Load() != 1 {
		t.Fatalf("url mirror: %v (%d hits)", err, mirrorHits.Load())
	}
	// A mirror without the file falls back to the origin.
	s3, _ := Open(t.TempDir())
	if _, err := s3.Pull(context.Background(), origin.URL+"/stories260K.gguf", PullOptions{Name: "s", SHA256: sum, Mirror: t.TempDir()}); err != nil || originHits.Load() != 1 {
		t.Fatalf("fallback: %v (%d origin hits)", err, originHits.Load())
	}
	// Ensure fetches a catalogue model through the mirror.
	s4, _ := Open(t.TempDir())
	if p, err := s4.Ensure(context.Background(), "stories260K", PullOptions{Mirror: testmodel.SharedDir()}); err != nil || !strings.HasSuffix(p, "stories260K.gguf") {
		t.Fatalf("ensure: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	srv, _ := server(t, []byte("<html>not a model</html>"), 0, 0, true)
	s, _ := Open(t.TempDir())
	if _, err := s.Pull(context.Background(), srv.URL+"/page.gguf", PullOptions{}); err == nil || !strings.Contains(err.Error(), "not a GGUF") {
		t.Fatalf("html: %v", err)
	}
	if _, err := s.Pull(context.Background(), srv.URL+"/missing.bin", PullOptions{Name: "m"}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: %v", err)
	}
	if _, err := s.Pull(context.Background(), "ftp://x/y.gguf", PullOptions{}); err == nil {
		t.Fatal("ftp accepted")
	}
	var nf *NotFoundError
	if _, err := s.Resolve("nothing"); !errors.As(err, &nf) {
		t.Fatalf("resolve: %v", err)
	}
	if err := s.Remove("nothing"); !errors.As(err, &nf) {
		t.Fatalf("remove: %v", err)
	}
}

func TestPullCancelLeavesResumablePart(t *testing.T) {
	data, sum := stories(t)
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hang until the client gives up
	}))
	defer stall.Close()
	s, _ := Open(t.TempDir())
	part := filepath.Join(s.Root(), "models", ".partial", "stories260K.gguf.part")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if st, err := os.Stat(part); err == nil && st.Size() > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := s.Pull(ctx, stall.URL+"/stories260K.gguf", PullOptions{SHA256: sum})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	if st, err := os.Stat(part); err != nil || st.Size() == 0 {
		t.Fatalf("no partial left to resume: %v", err)
	}
	srv, _ := server(t, data, 0, 0, true)
	if _, err := s.Pull(context.Background(), srv.URL+"/stories260K.gguf", PullOptions{SHA256: sum}); err != nil {
		t.Fatal(err)
	}
}

func TestResolveSource(t *testing.T) {
	for in, want := range map[string]string{
		"hf://ggml-org/models/tinyllamas/stories260K.gguf":  "https://huggingface.co/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf",
		"hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q8.gguf@abc1": "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/abc1/q8.gguf",
		"https://example.org/m.gguf":                        "https://example.org/m.gguf",
	} {
		if got, err := ResolveSource(in); err != nil || got != want {
			t.Errorf("%s -> %s, %v", in, got, err)
		}
	}
	if _, err := ResolveSource("hf://only/two"); err == nil {
		t.Error("short hf:// accepted")
	}
}
