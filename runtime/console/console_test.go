package console

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

// TestServesPageAndModules: / is the page with its security headers, every
// module it imports is served as JavaScript, and nothing else is.
func TestServesPageAndModules(t *testing.T) {
	h := Handler()
	resp := get(t, h, "GET", "/")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<script type="module" src="js/app.js">`) {
		t.Fatalf("GET /: %d %.200s", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "text/html; charset=utf-8", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	// Every relative import of every module resolves to a served module.
	imp := regexp.MustCompile(`(?m)^import .* from '\./([\w.-]+)';$`)
	mods, _ := fs.Glob(static, "static/js/*.js")
	if len(mods) < 5 {
		t.Fatalf("modules: %v", mods)
	}
	for _, m := range mods {
		src, _ := fs.ReadFile(static, m)
		for _, sub := range imp.FindAllStringSubmatch(string(src), -1) {
			r := get(t, h, "GET", "/js/"+sub[1])
			if r.StatusCode != 200 || r.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
				t.Errorf("%s imports %s: %d %q", m, sub[1], r.StatusCode, r.Header.Get("Content-Type"))
			}
		}
	}
	for _, p := range []string{"/style.css", "/favicon.svg"} {
		if r := get(t, h, "GET", p); r.StatusCode != 200 {
			t.Errorf("%s: %d", p, r.StatusCode)
		}
	}
	for _, p := range []string{"/nope.js", "/../console.go", "/static/index.html"} {
		if r := get(t, h, "GET", p); r.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, r.StatusCode)
		}
	}
	if r := get(t, h, "POST", "/"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", r.StatusCode)
	}
	if r := get(t, h, "HEAD", "/js/app.js"); r.StatusCode != 200 {
		t.Errorf("HEAD: %d", r.StatusCode)
	}
}

// TestNoInlineScriptOrStyle: the CSP forbids inline scripts, handlers and
// style attributes, so the files must not contain any.
func TestNoInlineScriptOrStyle(t *testing.T) {
	bad := regexp.MustCompile(`(?i)<script>|\son[a-z]+="|\sstyle="|setAttribute\('style'|innerHTML`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(static, p)
		if m := bad.FindString(string(b)); m != "" {
			t.Errorf("%s contains %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
