package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// client talks to one OpenAI-compatible server over a single keep-alive
// transport, as a real client library would.
type client struct {
	hc     *http.Client
	base   *url.URL // ends in /v1
	apiKey string
}

// newClient returns a client whose transport keeps up to conns idle
// connections to the server, so that every concurrent stream reuses its own.
func newClient(base *url.URL, apiKey string, conns int) *client {
	tr := &http.Transport{
		Proxy: nil, // measure the server, not a proxy
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        max(conns, 2) * 2,
		MaxIdleConnsPerHost: max(conns, 2) * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // a gzip'd event stream would be delivered in bursts
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &client{hc: &http.Client{Transport: tr}, base: base, apiKey: apiKey}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

func (c *client) endpoint(path string) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	return u.String()
}

// statusError is a non-2xx answer, with the message of an OpenAI-shaped
// error body ({"error":{"message":...}}) when there is one.
type statusError struct {
	Code    int
	Status  string
	Message string
}

func (e *statusError) Error() string {
	if e.Message == "" {
		return "HTTP " + e.Status
	}
	return "HTTP " + e.Status + ": " + e.Message
}

// errorMessage extracts a human message from an error body: OpenAI's
// {"error":{"message"}}, {"error":"..."}, vLLM's {"message"}, FastAPI's
// {"detail"}, else the start of the body itself.
func errorMessage(body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(body, &v) == nil {
		var obj struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		}
		var s string
		switch {
		case len(v.Error) > 0 && json.Unmarshal(v.Error, &obj) == nil && obj.Message != "":
			return obj.Message
		case len(v.Error) > 0 && json.Unmarshal(v.Error, &s) == nil && s != "":
			return s
		case v.Message != "":
			return v.Message
		case v.Detail != nil:
			return fmt.Sprint(v.Detail)
		}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return msg
}

// do sends one request and returns a response with a 2xx status, whose body
// the caller must close. A connection error before any response (the server
// closed a kept-alive connection, reset it, or answered nothing) is retried
// once on a fresh attempt; retries counts those retries plus the ones Go's
// transport made by itself. A non-2xx answer is a *statusError.
func (c *client) do(ctx context.Context, method, path string, body []byte) (resp *http.Response, retries int, err error) {
	for attempt := 0; ; attempt++ {
		var conns int
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			conns++
			reused = info.Reused
		}}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, c.endpoint(path), rd)
		if err != nil {
			return nil, retries, fmt.Errorf("building request: %w", err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json, text/event-stream")
		if c.apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+c.apiKey)
		}
		resp, err = c.hc.Do(req)
		retries += max(conns-1, 0) // the transport's own transparent retries
		if err != nil {
			if ctx.Err() != nil {
				return nil, retries, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
			}
			if attempt == 0 && retryable(err, reused) {
				retries++
				continue
			}
			return nil, retries, fmt.Errorf("%s %s: %w", method, path, unwrapURL(err))
		}
		if resp.StatusCode/100 != 2 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			return nil, retries, &statusError{Code: resp.StatusCode, Status: resp.Status, Message: errorMessage(b)}
		}
		return resp, retries, nil
	}
}

// retryable reports whether err is a connection failure before any response
// that a second attempt may not meet: anything on a reused keep-alive
// connection, and an EOF or reset on a fresh one.
func retryable(err error, reused bool) bool {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() {
		return false
	}
	return reused ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

// unwrapURL drops *url.Error's `Post "http://...":` prefix; the callers say
// which endpoint failed.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// getJSON GETs path and decodes the JSON answer into v.
func (c *client) getJSON(ctx context.Context, path string, v any) error {
	resp, _, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("decoding GET %s: %w", path, err)
	}
	return nil
}

// firstModel returns the first model id the server lists on /v1/models.
func (c *client) firstModel(ctx context.Context) (string, error) {
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := c.getJSON(ctx, "/models", &list); err != nil {
		return "", fmt.Errorf("listing models (pass -model to skip): %w", err)
	}
	if len(list.Data) == 0 || list.Data[0].ID == "" {
		return "", errors.New("the server lists no model on /v1/models; pass -model")
	}
	return list.Data[0].ID, nil
}
