package finetune

import (
	"archive/zip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

// downloadAdapter answers GET /v1/fine_tuning/jobs/{id}/adapter: the
// finished job's adapter as GGUF (?format=gguf, the default), or as a zip
// of a Hugging Face PEFT folder (?format=peft: adapter_model.safetensors
// and adapter_config.json, as `llmrt adapter export` writes).
func (s *Service) downloadAdapter(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	j, err := s.st.job(id)
	if err != nil {
		return httpapi.NotFound("job_not_found", "no fine-tuning job %q", id)
	}
	if j.Status != "succeeded" {
		return httpapi.Conflict("job_not_succeeded", "job %s has no adapter: its status is %s", id, j.Status)
	}
	name := j.ID
	if j.Suffix != "" {
		name = j.Suffix
	}
	path := s.adapterPath(j)
	switch format := r.URL.Query().Get("format"); format {
	case "", "gguf":
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("adapter of %s: %w", id, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("adapter of %s: %w", id, err)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name+".gguf"))
		http.ServeContent(w, r, name+".gguf", st.ModTime(), f)
		return nil
	case "peft":
		return s.writePEFT(w, j, path, name)
	default:
		return httpapi.BadRequest("format", "format must be gguf or peft, got %q", format)
	}
}

// writePEFT exports the adapter into a temporary folder and answers it
// zipped.
func (s *Service) writePEFT(w http.ResponseWriter, j *Job, path, name string) error {
	ad, err := lora.ReadAdapter(path)
	if err != nil {
		return fmt.Errorf("adapter of %s: %w", j.ID, err)
	}
	basePath, err := s.cfg.Resolve(j.Model)
	if err != nil {
		return fmt.Errorf("base %s of %s: %w", j.Model, j.ID, err)
	}
	base, err := gguf.Open(basePath)
	if err != nil {
		return fmt.Errorf("base %s of %s: %w", j.Model, j.ID, err)
	}
	heads, err := lora.HeadsOf(base)
	if err != nil {
		return fmt.Errorf("base %s of %s: %w", j.Model, j.ID, err)
	}
	dir, err := os.MkdirTemp("", "llmrt-peft-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := lora.ExportPEFT(ad, heads, j.Model, dir); err != nil {
		return fmt.Errorf("export %s as PEFT: %w", j.ID, err)
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name+"-peft.zip"))
	zw := zip.NewWriter(w)
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors"} {
		if err := addToZip(zw, filepath.Join(dir, f), name+"/"+f); err != nil {
			return err
		}
	}
	return zw.Close()
}

func addToZip(zw *zip.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dst, err := zw.Create(name)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, f)
	return err
}
