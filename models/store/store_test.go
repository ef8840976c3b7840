package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
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

// A local .gguf file is imported (copied, named after the file) and a
// second pull of it is "up to date"; paths that name nothing, files that
// are not GGUF and unknown names get errors that say what SOURCE can be.
func TestPullImportsLocalFile(t *testing.T) {
	data, sum := stories(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "my-model.gguf")
	os.WriteFile(src, data, 0o644)
	s, _ := Open(t.TempDir())
	m, err := s.Pull(context.Background(), src, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "my-model" || m.SHA256 != sum || m.Source != src || m.UpToDate {
		t.Fatalf("imported %+v", m)
	}
	if got, _ := os.ReadFile(m.Path); !bytes.Equal(got, data) {
		t.Fatal("stored copy differs")
	}
	again, err := s.Pull(context.Background(), "file://"+src, PullOptions{})
	if err != nil || !again.UpToDate || again.SHA256 != sum {
		t.Fatalf("second import: %+v, %v", again, err)
	}
	// The store keeps its copy when the original goes.
	os.Remove(src)
	if _, err := s.Resolve("my-model"); err != nil {
		t.Fatal(err)
	}
	notGGUF := filepath.Join(dir, "notes.gguf")
	os.WriteFile(notGGUF, []byte("hello"), 0o644)
	for in, want := range map[string]string{
		filepath.Join(dir, "missing.gguf"): "no such file",
		notGGUF:                            "not a GGUF model",
		dir:                                "a directory",
		"no-such-model":                    "not a known model name (ggml-vocab-bert-bge,",
	} {
		if _, err := s.Pull(context.Background(), in, PullOptions{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("pull %s: %v, want %q", in, err, want)
		}
	}
	if _, err := s.Resolve("notes"); err == nil {
		t.Fatal("a file that is not GGUF was stored")
	}
}

// digestServer serves data like Hugging Face: HEAD answers with the sha256
// in X-Linked-Etag (when sum is set); it counts GETs.
func digestServer(t *testing.T, data []byte, sum string) (*httptest.Server, *atomic.Int32) {
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sum != "" {
			w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodGet {
			gets.Add(1)
			w.Write(data)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &gets
}

// Pulling an installed model checks its sha256 (or, when the source
// announces none, its source and size) and fetches nothing when it matches;
// a damaged copy is fetched again.
func TestPullInstalledIsUpToDate(t *testing.T) {
	data, sum := stories(t)
	srv, gets := digestServer(t, data, sum)
	s, _ := Open(t.TempDir())
	src := srv.URL + "/o/r/stories260K.gguf"
	var logs bytes.Buffer
	opt := PullOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	if _, err := s.Pull(context.Background(), src, opt); err != nil || gets.Load() != 1 {
		t.Fatalf("first pull: %v, %d GETs", err, gets.Load())
	}
	m, err := s.Pull(context.Background(), src, opt)
	if err != nil || !m.UpToDate || m.SHA256 != sum || gets.Load() != 1 {
		t.Fatalf("second pull: %+v, %v, %d GETs", m, err, gets.Load())
	}
	// A known digest needs no request at all.
	srv.Close()
	if m, err := s.Pull(context.Background(), src, PullOptions{SHA256: sum}); err != nil || !m.UpToDate {
		t.Fatalf("pull with --sha256 while the server is gone: %+v, %v", m, err)
	}
	// A damaged copy is noticed (the file changed since its manifest) and replaced.
	srv2, gets2 := digestServer(t, data, sum)
	bad := append([]byte(nil), data...)
	bad[len(bad)-1] ^= 1
	os.WriteFile(m.Path, bad, 0o644)
	m, err = s.Pull(context.Background(), srv2.URL+"/o/r/stories260K.gguf", opt)
	if err != nil || m.UpToDate || gets2.Load() != 1 || !strings.Contains(logs.String(), "installed copy differs") {
		t.Fatalf("damaged copy: %+v, %v, %d GETs\n%s", m, err, gets2.Load(), logs.String())
	}
	if got, _ := os.ReadFile(m.Path); !bytes.Equal(got, data) {
		t.Fatal("damaged copy not replaced")
	}
	// Without a digest from the server, the same source and size count.
	srv3, gets3 := digestServer(t, data, "")
	src3 := srv3.URL + "/plain/stories260K.gguf"
	s3, _ := Open(t.TempDir())
	s3.Pull(context.Background(), src3, opt)
	if m, err := s3.Pull(context.Background(), src3, opt); err != nil || !m.UpToDate || gets3.Load() != 1 {
		t.Fatalf("no digest: %+v, %v, %d GETs", m, err, gets3.Load())
	}
}

// Each failed attempt is logged with its error before the retry; a server
// that answers 503 twice is waited out, one that is not there is given up
// on with a hint. hf:// sources go to HFEndpoint when it is set.
func TestPullLogsEachRetry(t *testing.T) {
	data, sum := stories(t)
	var calls atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path != "/owner/repo/resolve/main/stories260K.gguf" {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	defer flaky.Close()
	var logs bytes.Buffer
	opt := PullOptions{SHA256: sum, HFEndpoint: flaky.URL, RetryWait: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	s, _ := Open(t.TempDir())
	if _, err := s.Pull(context.Background(), "hf://owner/repo/stories260K.gguf", opt); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "download failed; retrying"); n != 2 || !strings.Contains(logs.String(), "503") ||
		!strings.Contains(logs.String(), "retry=1/5") || !strings.Contains(logs.String(), flaky.URL) {
		t.Fatalf("%d retry lines:\n%s", n, logs.String())
	}
	// Nothing listens on a closed listener's port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String()
	ln.Close()
	logs.Reset()
	opt.HFEndpoint, opt.Retries = gone, 2
	_, err = s.Pull(context.Background(), "hf://owner/repo/other.gguf", opt)
	if err == nil || !strings.Contains(err.Error(), "gave up after 2 retries") || !strings.Contains(err.Error(), "connection refused") ||
		!strings.Contains(err.Error(), "LLMRT_MIRROR") {
		t.Fatalf("offline: %v", err)
	}
	if n := strings.Count(logs.String(), "connection refused"); n != 2 {
		t.Fatalf("%d logged refusals:\n%s", n, logs.String())
	}
}
