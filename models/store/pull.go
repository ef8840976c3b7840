package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
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
	// Retries after a failed attempt (0: 5, below 0: none), waiting
	// RetryWait (default 200ms) times the attempt number squared before each.
	Retries   int
	RetryWait time.Duration
	// HFEndpoint replaces https://huggingface.co for hf:// sources (a
	// Hugging Face mirror; the CLI reads HF_ENDPOINT).
	HFEndpoint string
	// Logger hears what the pull does: each failed attempt and the retry
	// after it, and why an installed model is or is not fetched again.
	Logger *slog.Logger
}

// ResolveSource maps hf://OWNER/REPO/PATH[@REV] to its resolve URL; other
// http(s) URLs are returned as they are.
func ResolveSource(src string) (string, error) {
	return resolveSource(src, "")
}

func resolveSource(src, endpoint string) (string, error) {
	if endpoint == "" {
		endpoint = "https://huggingface.co"
	}
	if rest, ok := strings.CutPrefix(src, "hf://"); ok {
		rev := "main"
		if i := strings.LastIndex(rest, "@"); i > 0 {
			rest, rev = rest[:i], rest[i+1:]
		}
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return "", fmt.Errorf("pull %s: want hf://OWNER/REPO/FILE.gguf", src)
		}
		return fmt.Sprintf("%s/%s/%s/resolve/%s/%s", strings.TrimSuffix(endpoint, "/"), parts[0], parts[1], url.PathEscape(rev), parts[2]), nil
	}
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		known := make([]string, 0, len(Catalog()))
		for n := range Catalog() {
			known = append(known, n)
		}
		sort.Strings(known)
		return "", fmt.Errorf("pull %s: not a known model name (%s), hf://OWNER/REPO/FILE.gguf, http(s) URL or .gguf file", src, strings.Join(known, ", "))
	}
	return src, nil
}

// localSource returns the file a pull source names on this machine: a
// file:// URL, or a path to an existing file; "" when src is not one. A
// source that looks like a path (has a slash or ends in .gguf) but names no
// file is an error that says so.
func localSource(src string) (string, error) {
	if p, ok := strings.CutPrefix(src, "file://"); ok {
		src = p
	} else if strings.Contains(src, "://") {
		return "", nil
	}
	st, err := os.Stat(src)
	switch {
	case err == nil && st.IsDir():
		return "", fmt.Errorf("pull %s: a directory, not a .gguf file", src)
	case err == nil:
		return filepath.Abs(src)
	case strings.ContainsRune(src, filepath.Separator) || strings.HasSuffix(src, ".gguf"):
		return "", fmt.Errorf("pull %s: no such file", src)
	}
	return "", nil
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
	local, err := localSource(src)
	if err != nil {
		return Model{}, err
	}
	var rawURL string
	if local == "" {
		if rawURL, err = resolveSource(src, opt.HFEndpoint); err != nil {
			return Model{}, err
		}
	}
	file := path.Base(strings.SplitN(rawURL, "?", 2)[0])
	if local != "" {
		file = filepath.Base(local)
		src = local
	}
	if opt.Name == "" {
		opt.Name = strings.TrimSuffix(file, ".gguf")
	}
	if !ValidName(opt.Name) {
		return Model{}, fmt.Errorf("pull %s: invalid model name %q (use --name)", src, opt.Name)
	}
	opt.SHA256 = strings.ToLower(opt.SHA256)
	if opt.Retries == 0 {
		opt.Retries = 5
	} else if opt.Retries < 0 {
		opt.Retries = 0
	}
	if opt.RetryWait == 0 {
		opt.RetryWait = 200 * time.Millisecond
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = http.DefaultClient
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	mu, _ := pullLocks.LoadOrStore(opt.Name, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	if m, ok := s.upToDate(ctx, src, local, rawURL, &opt); ok {
		return m, nil
	}
	part := filepath.Join(s.root, "models", ".partial", opt.Name+".gguf.part")
	var got string
	if local != "" {
		if err := checkMagic(local); err != nil {
			return Model{}, fmt.Errorf("pull %s: %w", src, err)
		}
		if got, err = copyFile(ctx, local, part, opt.Progress); err != nil {
			os.Remove(part)
			return Model{}, fmt.Errorf("pull %s: %w", src, err)
		}
	}
	if got == "" && opt.Mirror != "" {
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
		return fmt.Errorf("the file is not a GGUF model (starts with %q)", b[:])
	}
	return nil
}

// copyFile copies src to dst and returns the sha256 of what it copied.
func copyFile(ctx context.Context, src, dst string, progress func(done, total int64)) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	h := sha256.New()
	pw := &progressWriter{total: st.Size(), fn: progress}
	if _, err := io.Copy(io.MultiWriter(out, h, pw), ctxReader{ctx, in}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileSHA256 hashes a file.
func fileSHA256(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// installedSHA256 is the digest of an installed model: its manifest's when
// the file still has the size and time the manifest recorded, else hashed.
func (s *Store) installedSHA256(ctx context.Context, m Model) (string, error) {
	if b, err := os.ReadFile(s.manifestPath(m.Name)); err == nil {
		var man Model
		if json.Unmarshal(b, &man) == nil && man.SHA256 != "" && man.Size == m.Size && man.Modified.Equal(m.Modified) {
			return man.SHA256, nil
		}
	}
	return fileSHA256(ctx, m.Path)
}

// upToDate reports whether opt.Name is installed with the file src names,
// so that nothing needs fetching. The digest to match is opt.SHA256 (the
// catalogue's or --sha256), a local file's own, or what the server
// announces for the file (Hugging Face's X-Linked-Etag); with none of
// those, an installed copy from the same source and of the size the server
// announces counts as current. Whatever it finds, it logs.
func (s *Store) upToDate(ctx context.Context, src, local, rawURL string, opt *PullOptions) (Model, bool) {
	m, err := s.Show(opt.Name)
	if err != nil {
		return Model{}, false
	}
	log := opt.Logger.With("model", opt.Name, "source", src)
	want, size := opt.SHA256, int64(-1)
	switch {
	case want != "":
	case local != "":
		if want, err = fileSHA256(ctx, local); err != nil {
			return Model{}, false
		}
	default:
		want, size, err = s.head(ctx, rawURL, opt)
		if err != nil {
			log.Warn("installed; could not ask the source whether it changed, fetching it again", "err", err)
			return Model{}, false
		}
	}
	if want == "" {
		if size == m.Size && m.Source == src {
			log.Info("up to date: installed from the same source with the same size (the source announces no sha256 to compare)", "size", m.Size)
			m.UpToDate = true
			return m, true
		}
		log.Info("installed copy differs from the source in size; fetching it again", "installed", m.Size, "source_size", size)
		return Model{}, false
	}
	have, err := s.installedSHA256(ctx, m)
	if err != nil {
		return Model{}, false
	}
	if have != want {
		log.Info("installed copy differs from the source; fetching it again", "installed_sha256", have, "want_sha256", want)
		return Model{}, false
	}
	m.SHA256, m.UpToDate = have, true
	return m, true
}

// head asks the server for the file's sha256 (Hugging Face's X-Linked-Etag
// on the redirect) and size, without following redirects to the data.
func (s *Store) head(ctx context.Context, rawURL string, opt *PullOptions) (string, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, rawURL, nil)
	if err != nil {
		return "", 0, err
	}
	if opt.Token != "" && isHF(req.URL, opt) {
		req.Header.Set("Authorization", "Bearer "+opt.Token)
	}
	c := *opt.HTTPClient
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return "", 0, &httpError{resp.StatusCode, resp.Status}
	}
	size := resp.ContentLength
	if v, err := strconv.ParseInt(resp.Header.Get("X-Linked-Size"), 10, 64); err == nil {
		size = v
	}
	sum := ""
	if etag := strings.Trim(resp.Header.Get("X-Linked-Etag"), `"`); len(etag) == 64 {
		sum = strings.ToLower(etag)
	}
	return sum, size, nil
}

// isHF reports whether u is Hugging Face (or the endpoint replacing it),
// the only host the token is sent to.
func isHF(u *url.URL, opt *PullOptions) bool {
	if strings.HasSuffix(u.Hostname(), "huggingface.co") {
		return true
	}
	e, err := url.Parse(opt.HFEndpoint)
	return opt.HFEndpoint != "" && err == nil && e.Host == u.Host
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
	log := opt.Logger.With("url", rawURL)
	for attempt := 0; attempt <= opt.Retries; attempt++ {
		if attempt > 0 {
			wait := time.Duration(attempt*attempt) * opt.RetryWait
			log.Warn("download failed; retrying", "retry", fmt.Sprintf("%d/%d", attempt, opt.Retries), "in", wait, "err", lastErr)
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(wait):
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
	err := fmt.Errorf("gave up after %d retries: %w", opt.Retries, lastErr)
	var ne net.Error
	if errors.As(lastErr, &ne) {
		err = fmt.Errorf("%w (no network? LLMRT_MIRROR can name a directory or URL that has %s, or copy the file here and `llmrt pull ./%s`)",
			err, path.Base(strings.SplitN(rawURL, "?", 2)[0]), path.Base(strings.SplitN(rawURL, "?", 2)[0]))
	}
	return "", err
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
	if opt.Token != "" && isHF(req.URL, opt) {
		req.Header.Set("Authorization", "Bearer "+opt.Token)
	}
	resp, err := opt.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is logged beside the error already
		}
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
