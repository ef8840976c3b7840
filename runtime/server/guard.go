package server

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// Checks that keep web pages on other sites from using a server on the
// user's machine. A browser sends a cross-site POST with Content-Type
// text/plain, x-www-form-urlencoded or multipart/form-data without asking
// first (no CORS preflight), and a DNS-rebinding page reaches 127.0.0.1
// under its own host name. So: state-changing requests from an Origin that
// --cors does not allow are refused, JSON endpoints take only JSON, and a
// server listening on loopback answers only to loopback host names (or to
// the ones --allowed-host lists).

// bodyKind is what a route accepts as its request body.
type bodyKind int

const (
	bodyJSON   bodyKind = iota // application/json
	bodyUpload                 // application/json or multipart/form-data
	bodyNone                   // GET, HEAD: not checked
)

func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// checkOrigin refuses a state-changing request whose Origin is neither the
// server's own nor one that --cors allows.
func (s *Server) checkOrigin(r *http.Request) *httpapi.APIError {
	origin := r.Header.Get("Origin")
	if origin == "" || !stateChanging(r.Method) || s.originAllowed(origin) {
		return nil
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return nil // same origin
	}
	return &httpapi.APIError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: httpapi.Ptr("origin_not_allowed"),
		Message: "cross-origin request from " + origin + " refused: start the server with --cors " + origin + " to allow it"}
}

func (s *Server) originAllowed(origin string) bool {
	for _, o := range s.cfg.CORSOrigins {
		if o == "*" || o == origin {
			return true
		}
	}
	return false
}

// checkContentType refuses a request body of a type the route does not
// take. An empty body (ContentLength 0) needs no type.
func checkContentType(r *http.Request, kind bodyKind) *httpapi.APIError {
	if kind == bodyNone || !stateChanging(r.Method) || r.ContentLength == 0 {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		if mt == "application/json" || strings.HasSuffix(mt, "+json") {
			return nil
		}
		if kind == bodyUpload && mt == "multipart/form-data" {
			return nil
		}
	}
	want := "application/json"
	if kind == bodyUpload {
		want = "application/json or multipart/form-data"
	}
	if ct == "" {
		ct = "none"
	}
	return &httpapi.APIError{Status: http.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: httpapi.Ptr("unsupported_media_type"),
		Message: "this endpoint takes Content-Type " + want + " (got " + ct + "); with curl, add -H 'Content-Type: application/json'"}
}

// checkHost refuses a Host header the server does not answer to: with
// --allowed-host set, any other name; without it, on a loopback listener,
// any name that is not loopback (a DNS-rebinding page's own domain).
func (s *Server) checkHost(r *http.Request) *httpapi.APIError {
	allowed := s.cfg.AllowedHosts
	if len(allowed) == 0 && !s.loopback.Load() {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if isLoopbackHost(host) {
		return nil
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, host) {
			return nil
		}
	}
	return &httpapi.APIError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: httpapi.Ptr("host_not_allowed"),
		Message: "host " + r.Host + " is not allowed: this server answers to loopback names only (a guard against DNS rebinding); start it with --allowed-host NAME to serve under another name"}
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// inflight counts the requests being served so that a drain can wait for
// them; once draining, no request enters.
type inflight struct {
	mu       sync.Mutex
	n        int
	draining bool
	idle     chan struct{}
}

// enter admits a request unless the server is draining.
func (f *inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.draining {
		return false
	}
	f.n++
	return true
}

func (f *inflight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// isDraining reports whether drain was called.
func (f *inflight) isDraining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

// drain stops admissions and returns a channel closed when the last
// admitted request has left.
func (f *inflight) drain() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining = true
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
	} else {
		f.idle = ch
	}
	return ch
}
