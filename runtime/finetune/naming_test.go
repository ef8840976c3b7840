package finetune

import (
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

	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/registry"
)

func postJSON(t *testing.T, url string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// A job's adapter is SUFFIX.gguf in the adapters folder: `adapter ls`
// names it by its suffix and BASE+SUFFIX serves it as well as
// ft:BASE:SUFFIX. A suffix whose file exists, or that a live job makes, is
// refused.
func TestJobAdapterIsNamedBySuffix(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	for _, n := range []string{"stories260K", "stories-b"} {
		if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(home, "models", n+".gguf")); err != nil {
			t.Fatal(err)
		}
	}
	url, svc, stop := serve(t, home)
	defer stop()

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "fine-tune")
	fw, _ := mw.CreateFormFile("file", "pc.jsonl")
	fw.Write([]byte(strings.Repeat(`{"prompt": "The secret word is", "completion": " pc."}`+"\n", 4)))
	mw.Close()
	resp, err := http.Post(url+"/v1/files", mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&file)
	resp.Body.Close()
	if file.ID == "" {
		t.Fatalf("upload: %d", resp.StatusCode)
	}

	// An adapter of that name already exists: refused, the file untouched.
	taken := filepath.Join(home, "adapters", "taken.gguf")
	os.WriteFile(taken, []byte("mine"), 0o644)
	job := map[string]any{"model": "stories260K", "training_file": file.ID, "suffix": "taken", "hyperparameters": map[string]any{"n_epochs": 1}}
	if code, data := postJSON(t, url+"/v1/fine_tuning/jobs", job); code != 409 || !strings.Contains(string(data), "taken.gguf") {
		t.Fatalf("suffix of an existing adapter: %d %s", code, data)
	}
	if b, _ := os.ReadFile(taken); string(b) != "mine" {
		t.Fatal("the existing adapter was changed")
	}
	for _, bad := range []string{".hidden", "x.ckpt"} {
		job["suffix"] = bad
		if code, _ := postJSON(t, url+"/v1/fine_tuning/jobs", job); code != 400 {
			t.Fatalf("suffix %q: %d", bad, code)
		}
	}

	job["suffix"] = "pc"
	code, data := postJSON(t, url+"/v1/fine_tuning/jobs", job)
	var j Job
	if code != 200 || json.Unmarshal(data, &j) != nil || j.FineTunedModel == nil || *j.FineTunedModel != "ft:stories260K:pc" {
		t.Fatalf("create: %d %s", code, data)
	}
	// The same suffix for another base is refused too: it is one file.
	job["model"] = "stories-b"
	if code, data := postJSON(t, url+"/v1/fine_tuning/jobs", job); code != 409 {
		t.Fatalf("second job with suffix pc: %d %s", code, data)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for j.Status != "succeeded" && j.Status != "failed" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		cur, err := svc.st.job(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		j = *cur
	}
	if j.Status != "succeeded" {
		t.Fatalf("job %s: %+v", j.Status, j.Error)
	}
	list, err := names.AdapterDir(filepath.Join(home, "adapters")).List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range list {
		got = append(got, a.Name+"/"+a.Base)
		if strings.HasPrefix(a.Name, "ftjob-") {
			t.Errorf("adapter named by its job: %s", a.Name)
		}
	}
	if strings.Join(got, ",") != "pc/stories260K,taken/" {
		t.Fatalf("adapters folder: %v", got)
	}
	reg := svc.cfg.Registry.(*registry.Registry)
	for _, id := range []string{"ft:stories260K:pc", "stories260K+pc"} {
		if _, ad, err := reg.ParseID(id); err != nil || ad == nil || ad.Path == "" || filepath.Base(ad.Path) != "pc.gguf" {
			t.Fatalf("%s: %+v %v", id, ad, err)
		}
	}
	var created time.Time
	for _, a := range reg.AdapterList() {
		if a.Name == "ft:stories260K:pc" {
			created = a.Created
		}
	}
	if j.FinishedAt == nil || created.Unix() != *j.FinishedAt {
		t.Fatalf("ft:stories260K:pc created %v, job finished at %v", created, j.FinishedAt)
	}
	// Now the file exists: a new job with that suffix is refused.
	job["model"] = "stories260K"
	if code, data := postJSON(t, url+"/v1/fine_tuning/jobs", job); code != 409 {
		t.Fatalf("suffix of a finished job: %d %s", code, data)
	}
}
