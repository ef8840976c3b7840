package finetune

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

func upload(t *testing.T, url, name, content string) (int, map[string]any) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("purpose", "fine-tune")
	fw, _ := mw.CreateFormFile("file", name)
	io.WriteString(fw, content)
	mw.Close()
	resp, err := http.Post(url+"/v1/files", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestUploadListsBadLinesAndAdapterDownloads: a bad upload names every bad
// line; a finished job's adapter downloads as the GGUF file it wrote and as
// a PEFT zip that imports back to the same tensors.
func TestUploadListsBadLinesAndAdapterDownloads(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	basePath := testmodel.Shared(t, "stories260K.gguf")
	if err := os.Symlink(basePath, filepath.Join(home, "models", "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	url, _, stop := serve(t, home)
	defer stop()

	code, out := upload(t, url, "bad.jsonl", "{\"text\": \"ok\"}\nnot json\n{\"text\": \"ok\"}\n[1]\n")
	msg, _ := out["error"].(map[string]any)["message"].(string)
	if code != http.StatusBadRequest || !strings.Contains(msg, "2 of 4 lines are bad") || !strings.Contains(msg, "line 2 ") || !strings.Contains(msg, "line 4 ") {
		t.Fatalf("bad upload: %d %q", code, msg)
	}

	line, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}}})
	code, f := upload(t, url, "tiny.jsonl", string(line)+"\n"+string(line)+"\n")
	if code != http.StatusOK {
		t.Fatalf("upload: %d %v", code, f)
	}
	b, _ := json.Marshal(map[string]any{"model": "stories260K", "training_file": f["id"], "suffix": "dl", "hyperparameters": map[string]any{"n_epochs": 1}})
	resp, err := http.Post(url+"/v1/fine_tuning/jobs", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var job map[string]any
	json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	id, _ := job["id"].(string)
	get := func(path string) (int, []byte) {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for i := 0; i < 1200; i++ {
		_, b := get("/v1/fine_tuning/jobs/" + id)
		json.Unmarshal(b, &job)
		if s := job["status"]; s == "succeeded" || s == "failed" || s == "cancelled" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if job["status"] != "succeeded" {
		t.Fatalf("job: %v", job)
	}

	code, ggufBytes := get("/v1/fine_tuning/jobs/" + id + "/adapter")
	onDisk, _ := os.ReadFile(filepath.Join(home, "adapters", "dl.gguf"))
	if code != http.StatusOK || len(onDisk) == 0 || !bytes.Equal(ggufBytes, onDisk) {
		t.Fatalf("gguf download: %d, %d bytes (file %d)", code, len(ggufBytes), len(onDisk))
	}
	code, zb := get("/v1/fine_tuning/jobs/" + id + "/adapter?format=peft")
	if code != http.StatusOK {
		t.Fatalf("peft download: %d %s", code, zb)
	}
	zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, zf := range zr.File {
		rc, _ := zf.Open()
		data, _ := io.ReadAll(rc)
		rc.Close()
		os.WriteFile(filepath.Join(dir, filepath.Base(zf.Name)), data, 0o644)
	}
	want, err := lora.ReadAdapter(filepath.Join(home, "adapters", "dl.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := gguf.Open(basePath)
	heads, _ := lora.HeadsOf(base)
	got, err := lora.ImportPEFT(dir, want.Arch, heads)
	if err != nil {
		t.Fatalf("import the downloaded PEFT zip: %v", err)
	}
	if len(got.Pairs) != len(want.Pairs) || len(got.Pairs) == 0 {
		t.Fatalf("PEFT has %d pairs, GGUF %d", len(got.Pairs), len(want.Pairs))
	}
	for name, p := range want.Pairs {
		q := got.Pairs[name]
		if len(q.A) != len(p.A) || len(q.B) != len(p.B) {
			t.Fatalf("%s: shapes differ", name)
		}
		for i := range p.B {
			if d := q.B[i]*got.Alpha - p.B[i]*want.Alpha; d > 1e-4 || d < -1e-4 {
				t.Fatalf("%s: B[%d] %g (alpha %g) vs %g (alpha %g)", name, i, q.B[i], got.Alpha, p.B[i], want.Alpha)
			}
		}
	}
	if code, _ := get("/v1/fine_tuning/jobs/" + id + "/adapter?format=onnx"); code != http.StatusBadRequest {
		t.Fatalf("unknown format: %d", code)
	}
	if code, _ := get("/v1/fine_tuning/jobs/ftjob-nope/adapter"); code != http.StatusNotFound {
		t.Fatalf("unknown job: %d", code)
	}
}
