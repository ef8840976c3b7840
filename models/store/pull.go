package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// CatalogEntry is a model the store knows how to fetch by name.
type CatalogEntry struct {
	Source string // hf://... or https://...
	SHA256 string
	Size   int64
}

// Catalog is the built-in list of small models, with the digests this
// project recorded for them (see ../shared/models/README.md).
func Catalog() map[string]CatalogEntry {
	const llamaCpp = "https://raw.githubusercontent.com/ggml-org/llama.cpp/f4ab2a41476600a98067a9474ea8f9e6db41bcfa/models/"
	return map[string]CatalogEntry{
		"stories260K":          {"hf://ggml-org/models/tinyllamas/stories260K.gguf", "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d", 1185376},
		"llama-2-tiny-random":  {"hf://aladar/llama-2-tiny-random-GGUF/llama-2-tiny-random.gguf", "81f226c62d28ed4a1a9b9fa080fcd9f0cc40e0f9d5680036583ff98fbcd035cb", 1750560},
		"ggml-vocab-llama-spm": {llamaCpp + "ggml-vocab-llama-spm.gguf", "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69", 723869},
		"ggml-vocab-gpt-2":     {llamaCpp + "ggml-vocab-gpt-2.gguf", "cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac", 1766807},
		"ggml-vocab-bert-bge":  {llamaCpp + "ggml-vocab-bert-bge.gguf", "fbcbe22278fb302694d5f4a41bfe48c5f90e8e3554eab1c0435387dff654a854", 627549},
		"ggml-vocab-phi-3":     {"https://raw.githubusercontent.com/ggml-org/llama.cpp/3b38d48609280aa5f8ab7ea135a4351b2a5ee240/models/ggml-vocab-phi-3.gguf", "967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326", 726019},
	}
}

// PullOptions control a download.
type PullOptions struct {
	// Name in the store (default: the file name without .gguf).
	Name string
	// SHA256 the file must have (default: the catalogue's, or the digest
	// Hugging Face announces in X-Linked-ETag).
	SHA256 string
	// Mirror is a directory or base URL tried before the origin; files are
	// looked up there by their base name.
	Mirror string
	// Token is sent as a Bearer token to huggingface.co.
	Token      string
	Progress   func(done, total int64)
	HTTPClient *http.Client
	// Retries after a cut connection (default 5).
	Retries int
}

// ResolveSource maps hf://OWNER/REPO/PATH[@REV] to its resolve URL; other
// http(s) URLs are returned as they are.
func ResolveSource(src string) (string, error) {
	if rest, ok := strings.CutPrefix(src, "hf://"); ok {
		rev := "main"
		if i := strings.LastIndex(rest, "@"); i > 0 {
			rest, rev = rest[:i], rest[i+1:]
		}
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return "", fmt.Errorf("pull %s: want hf://OWNER/REPO/FILE.gguf", src)
		}
		return fmt.Sprintf("https://huggingface.co/%s/%s/resolve/%s/%s", parts[0], parts[1], url.PathEscape(rev), parts[2]), nil
	}
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("pull %s: not a known model name, hf:// source or http(s) URL", src)
	}
	return src, nil
}

var pullLocks sync.Map // name -> *sync.Mutex: one pull per name per process

// Pull downloads src into the store and returns the stored model.
func (s *Store) Pull(ctx context.Context, src string, opt PullOptions) (Model, error) {
	if e, ok := Catalog()[src]; ok {
		if opt.Name == "" {
			opt.Name = src
		}
		if opt.SHA256 == "" {
			opt.SHA256 = e.SHA256
		}
		src = e.Source
	}
	rawURL, err := ResolveSource(src)
	if err != nil {
		return Model{}, err
	}
	file := path.Base(strings.SplitN(rawURL, "?", 2)[0])
	if opt.Name == "" {
		opt.Name = strings.TrimSuffix(file, ".gguf")
	}
	if !ValidName(opt.Name) {
		return Model{}, fmt.Errorf("pull %s: invalid model name %q", src, opt.Name)
	}
	opt.SHA256 = strings.ToLower(opt.SHA256)
	if opt.Retries == 0 {
		opt.Retries = 5
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = http.DefaultClient
	}
	mu, _ := pullLocks.LoadOrStore(opt.Name, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	part := filepath.Join(s.root, "models", ".partial", opt.Name+".gguf.part")
	var got string
	if opt.Mirror != "" {
		got, err = s.fromMirror(ctx, opt, file, part)
		if err != nil {
			return Model{}, err
		}
	}
	if got == "" {
		got, err = s.download(ctx, rawURL, part, &opt)
		if err != nil {
			return Model{}, fmt.Errorf("pull %s: %w", src, err)
		}
	}
	if opt.SHA256 != "" && got != opt.SHA256 {
		os.Remove(part)
		return Model{}, fmt.Errorf("pull %s: sha256 mismatch: got %s, want %s (the download was discarded)", src, got, opt.SHA256)
	}
	if err := checkMagic(part); err != nil {
		os.Remove(part)
		return Model{}, fmt.Errorf("pull %s: %w", src, err)
	}
	dst := s.PathFor(opt.Name)
	if err := syncFile(part); err != nil {
		return Model{}, fmt.Errorf("pull %s: %w", src, err)
	}
	if err := os.Rename(part, dst); err != nil {
		return Model{}, fmt.Errorf("pull %s: %w", src, err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		return Model{}, err
	}
	m := Model{Name: opt.Name, Path: dst, Size: st.Size(), SHA256: got, Source: src, Modified: st.ModTime()}
	if err := s.writeManifest(m); err != nil {
		return m, fmt.Errorf("pull %s: manifest: %w", src, err)
	}
	return m, nil
}

// Ensure returns a model's file, pulling a catalogue model when missing.
func (s *Store) Ensure(ctx context.Context, name string, opt PullOptions) (string, error) {
	if p, err := s.Resolve(name); err == nil {
		return p, nil
	}
	if _, ok := Catalog()[name]; !ok {
		return s.Resolve(name)
	}
	m, err := s.Pull(ctx, name, opt)
	if err != nil {
		return "", err
	}
	return m.Path, nil
}

func checkMagic(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil || string(b[:]) != "GGUF" {
		return fmt.Errorf("the downloaded file is not a GGUF model (starts with %q)", b[:])
	}
	return nil
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// fromMirror copies the file from a mirror directory or URL into part; it
// returns "" (and no error) when the mirror does not have it.
func (s *Store) fromMirror(ctx context.Context, opt PullOptions, file, part string) (string, error) {
	if strings.HasPrefix(opt.Mirror, "http://") || strings.HasPrefix(opt.Mirror, "https://") {
		sum, err := s.download(ctx, strings.TrimSuffix(opt.Mirror, "/")+"/"+url.PathEscape(file), part, &opt)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) && he.code == http.StatusNotFound {
				os.Remove(part)
				return "", nil
			}
			return "", fmt.Errorf("pull from mirror %s: %w", opt.Mirror, err)
		}
		return sum, nil
	}
	srcPath := filepath.Join(opt.Mirror, file)
	in, err := os.Open(srcPath)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pull from mirror %s: %w", opt.Mirror, err)
	}
	defer in.Close()
	st, _ := in.Stat()
	out, err := os.Create(part)
	if err != nil {
		return "", err
	}
	defer out.Close()
	h := sha256.New()
	pw := &progressWriter{total: st.Size(), fn: opt.Progress}
	if _, err := io.Copy(io.MultiWriter(out, h, pw), ctxReader{ctx, in}); err != nil {
		return "", fmt.Errorf("pull from mirror %s: %w", opt.Mirror, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type httpError struct {
	code   int
	status string
}

func (e *httpError) Error() string { return "server answered " + e.status }

// download fetches rawURL into part, resuming what part already holds, and
// returns the sha256 of the whole file.
func (s *Store) download(ctx context.Context, rawURL, part string, opt *PullOptions) (string, error) {
	var lastErr error
	for attempt := 0; attempt <= opt.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(attempt*attempt) * 200 * time.Millisecond):
			}
		}
		sum, retry, err := s.downloadOnce(ctx, rawURL, part, opt)
		if err == nil {
			return sum, nil
		}
		lastErr = err
		if !retry || ctx.Err() != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("gave up after %d retries: %w", opt.Retries, lastErr)
}

func (s *Store) downloadOnce(ctx context.Context, rawURL, part string, opt *PullOptions) (sum string, retry bool, err error) {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", false, err
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	if opt.Token != "" && strings.HasSuffix(req.URL.Hostname(), "huggingface.co") {
		req.Header.Set("Authorization", "Bearer "+opt.Token)
	}
	resp, err := opt.HTTPClient.Do(req)
	if err != nil {
		return "", true, err
	}
	defer resp.Body.Close()
	var total int64
	switch resp.StatusCode {
	case http.StatusPartialContent:
		total = have + resp.ContentLength
	case http.StatusOK:
		// The server ignored the range (or nothing was there): start over.
		if err := f.Truncate(0); err != nil {
			return "", false, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", false, err
		}
		have = 0
		total = resp.ContentLength
	case http.StatusRequestedRangeNotSatisfiable:
		// The part is already whole (or larger than the file): restart.
		f.Truncate(0)
		return "", true, errors.New("range not satisfiable; restarting")
	default:
		retryable := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return "", retryable, &httpError{resp.StatusCode, resp.Status}
	}
	if opt.SHA256 == "" {
		if etag := strings.Trim(resp.Header.Get("X-Linked-Etag"), `"`); len(etag) == 64 {
			opt.SHA256 = strings.ToLower(etag)
		}
	}
	h := sha256.New()
	if have > 0 {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", false, err
		}
		if _, err := io.CopyN(h, f, have); err != nil {
			return "", false, err
		}
	}
	pw := &progressWriter{done: have, total: total, fn: opt.Progress}
	pw.report()
	if _, err := io.Copy(io.MultiWriter(f, h, pw), resp.Body); err != nil {
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		return "", true, fmt.Errorf("connection cut after %d bytes: %w", pw.done, err)
	}
	if total > 0 && pw.done != total {
		return "", true, fmt.Errorf("connection cut after %d of %d bytes", pw.done, total)
	}
	return hex.EncodeToString(h.Sum(nil)), false, nil
}

type progressWriter struct {
	done, total int64
	fn          func(done, total int64)
	last        time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if time.Since(p.last) > 100*time.Millisecond || p.done == p.total {
		p.report()
	}
	return len(b), nil
}

func (p *progressWriter) report() {
	p.last = time.Now()
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
