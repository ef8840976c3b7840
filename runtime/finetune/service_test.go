package finetune

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// serve runs a real server on 127.0.0.1 with the fine-tuning service over
// home (models in home/models), and returns its URL and a stop function.
func serve(t *testing.T, home string) (string, *Service, func()) {
	t.Helper()
	models := filepath.Join(home, "models")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	res := registry.DirResolver{Dir: models}
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: res, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(home, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 512, Threads: 2}})
	svc, err := Open(Config{Dir: filepath.Join(home, "finetune"), AdapterDir: filepath.Join(home, "adapters"), Registry: reg,
		Resolve: res.Resolve, Threads: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet}, reg)
	svc.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stop := func() {
		cancel()
		<-done
		svc.Close()
		reg.Close()
	}
	return "http://" + ln.Addr().String(), svc, stop
}

func TestFineTuningWithOpenAINodeClient(t *testing.T) {
	dir, err := filepath.Abs("../../scripts/apitest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		t.Fatalf("the openai npm package is not installed: run `npm ci` in %s (make test does): %v", dir, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the API compatibility test: %v", err)
	}
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(home, "models", "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	url, _, stop := serve(t, home)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "finetune.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LLMRT_BASE_URL="+url+"/v1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	stop()
	if err != nil {
		t.Fatalf("openai node client fine-tuning tests failed: %v", err)
	}

	// Jobs, files and the fine-tuned model survive a restart.
	url, svc, stop := serve(t, home)
	defer stop()
	jobs, err := svc.st.jobs()
	if err != nil || len(jobs) < 2 {
		t.Fatalf("%d jobs after a restart (%v)", len(jobs), err)
	}
	var ok bool
	for _, a := range svc.cfg.Registry.(*registry.Registry).AdapterList() {
		ok = ok || a.Name == "ft:stories260K:secret"
	}
	if !ok {
		t.Fatal("the fine-tuned model is not served after a restart")
	}
	_ = url
}

// TestDPOJobThroughTheAPI uploads preference pairs, creates a job with
// OpenAI's method {type: "dpo"} shape, and waits for it: the job shows the
// method with its beta, its events carry the reward margin and accuracy,
// and the fine-tuned model is served. An unknown method type is refused.
func TestDPOJobThroughTheAPI(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(home, "models", "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	url, svc, stop := serve(t, home)
	defer stop()
	var lines []string
	for _, p := range [][3]string{
		{"Once upon a time, there was a little", " frog who liked to sing.", " girl named Lily."},
		{"One day, Tom found a", " shiny key under a rock.", " big, red ball"},
	} {
		b, _ := json.Marshal(map[string]any{"input": map[string]any{"messages": []map[string]string{{"role": "user", "content": p[0]}}},
			"preferred_output": []map[string]string{{"role": "assistant", "content": p[1]}}, "non_preferred_output": []map[string]string{{"role": "assistant", "content": p[2]}}})
		lines = append(lines, string(b))
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("purpose", "fine-tune")
	fw, _ := mw.CreateFormFile("file", "prefs.jsonl")
	fw.Write([]byte(strings.Join(lines, "\n") + "\n"))
	mw.Close()
	var file File
	post(t, url+"/v1/files", mw.FormDataContentType(), &body, http.StatusOK, &file)

	bad := `{"model": "stories260K", "training_file": "` + file.ID + `", "method": {"type": "reinforcement"}}`
	var e struct {
		Error struct{ Message, Param string }
	}
	post(t, url+"/v1/fine_tuning/jobs", "application/json", strings.NewReader(bad), http.StatusBadRequest, &e)
	if e.Error.Param != "method.type" || !strings.Contains(e.Error.Message, "dpo") {
		t.Fatalf("unknown method: %+v", e)
	}

	req := `{"model": "stories260K", "training_file": "` + file.ID + `", "suffix": "prefs",
		"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 3}}}}`
	var j Job
	post(t, url+"/v1/fine_tuning/jobs", "application/json", strings.NewReader(req), http.StatusOK, &j)
	if j.Method["type"] != "dpo" || j.Method["dpo"].(map[string]any)["hyperparameters"].(map[string]any)["beta"] != 0.2 {
		t.Fatalf("job method %v", j.Method)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for j.Status != "succeeded" {
		if j.Status == "failed" || j.Status == "cancelled" || time.Now().After(deadline) {
			t.Fatalf("job %s: %s %+v", j.ID, j.Status, j.Error)
		}
		time.Sleep(200 * time.Millisecond)
		get(t, url+"/v1/fine_tuning/jobs/"+j.ID, &j)
	}
	var evs struct{ Data []Event }
	get(t, url+"/v1/fine_tuning/jobs/"+j.ID+"/events?limit=100", &evs)
	margins := 0
	for _, ev := range evs.Data {
		if _, ok := ev.Data["reward_margin"]; ok {
			if _, ok := ev.Data["reward_accuracy"]; !ok {
				t.Fatalf("event %v has a margin but no accuracy", ev.Data)
			}
			margins++
		}
	}
	if margins != 3 { // 2 pairs in one row: one step per epoch
		t.Fatalf("%d step events with a reward margin, want 3", margins)
	}
	ad, err := lora.ReadAdapter(filepath.Join(home, "adapters", "prefs.gguf")) // the suffix names the adapter file
	if err != nil {
		t.Fatal(err)
	}
	if ad.Meta["llmrt.train.method"] != "dpo" || ad.Meta["llmrt.train.dpo_beta"] != "0.2" {
		t.Fatalf("adapter metadata %v", ad.Meta)
	}
	var ok bool
	for _, a := range svc.cfg.Registry.(*registry.Registry).AdapterList() {
		ok = ok || a.Name == "ft:stories260K:prefs"
	}
	if !ok {
		t.Fatal("the DPO-tuned model is not served")
	}
}

func post(t *testing.T, url, ctype string, body io.Reader, want int, out any) {
	t.Helper()
	resp, err := http.Post(url, ctype, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("POST %s: %v: %s", url, err, b)
	}
}

func get(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
}
