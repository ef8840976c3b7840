// Package httpapi holds what every HTTP route of llmrt shares: OpenAI's
// error object and the constructors for the statuses OpenAI uses, JSON
// request decoding with errors that say what is wrong, and JSON responses.
// The server and the packages that register routes with it (collections,
// fine-tuning, evaluations) answer through it, so every route speaks the
// same shapes.
package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// APIError is an error answered in OpenAI's shape:
// {"error": {"message", "type", "param", "code"}}.
type APIError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
	// RetryAfter, in seconds, is sent as a Retry-After header when > 0.
	RetryAfter int `json:"-"`
}

func (e *APIError) Error() string { return e.Message }

// NewID is a random object id with OpenAI's kind of prefix ("cmpl-",
// "file-", ...).
func NewID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Ptr returns a pointer to v (for Param and Code).
func Ptr[T any](v T) *T { return &v }

// BadRequest is a 400 invalid_request_error naming the offending param
// ("" for none).
func BadRequest(param, format string, args ...any) *APIError {
	e := &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: fmt.Sprintf(format, args...)}
	if param != "" {
		e.Param = Ptr(param)
	}
	return e
}

// NotFound is a 404 with an error code such as "model_not_found".
func NotFound(code, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: Ptr(code), Message: fmt.Sprintf(format, args...)}
}

// Conflict is a 409, for creating what already exists.
func Conflict(code, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusConflict, Type: "invalid_request_error", Code: Ptr(code), Message: fmt.Sprintf(format, args...)}
}

// Internal is a 500 carrying err's message.
func Internal(err error) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()}
}

// Overloaded is a 429 that the SDKs retry after retryAfter seconds.
func Overloaded(retryAfter int, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: Ptr("rate_limit_exceeded"), Message: fmt.Sprintf(format, args...), RetryAfter: retryAfter}
}

// Unavailable is a 503 (retryAfter 0: no Retry-After header).
func Unavailable(retryAfter int, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: Ptr("unavailable"), Message: fmt.Sprintf(format, args...), RetryAfter: retryAfter}
}

// WriteError answers with err in OpenAI's error shape. Errors that are not
// APIErrors become 500s.
func WriteError(w http.ResponseWriter, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = Internal(err)
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	json.NewEncoder(w).Encode(map[string]*APIError{"error": ae})
}

// WriteJSON answers v with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// WriteJob answers a background job's status: running, the JSON the
// caller marshalled from memory (inMemory); otherwise, when dir is set,
// the file dir/ID.json a finished job was kept in; otherwise a 404 with
// code, naming the job as what ("no evaluation \"ID\"").
func WriteJob(w http.ResponseWriter, status []byte, inMemory bool, dir, id, code, what string) error {
	if !inMemory && dir != "" && !strings.ContainsAny(id, "/\\.") {
		if b, err := os.ReadFile(filepath.Join(dir, id+".json")); err == nil {
			status, inMemory = b, true
		}
	}
	if !inMemory {
		return NotFound(code, "no %s %q", what, id)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(status)
	return err
}

// Decode reads a JSON request body into v. A malformed, empty or
// oversized body gives a 400 or 413 that says what is wrong; nil means v
// was filled. (Compare the result with nil before storing it in an error.)
func Decode(r *http.Request, v any) *APIError {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return &APIError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: Ptr("request_too_large"),
				Message: fmt.Sprintf("request body is larger than the limit of %d bytes", mbe.Limit)}
		case errors.As(err, &se):
			return BadRequest("", "malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			field := strings.TrimPrefix(te.Field, "samplingFields.")
			return BadRequest(field, "field %q: expected %s, got JSON %s", field, te.Type, te.Value)
		case err.Error() == "EOF":
			return BadRequest("", "request body is empty; expected a JSON object")
		default:
			return BadRequest("", "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return BadRequest("", "malformed JSON: extra data after the object")
	}
	return nil
}

// DecodeJSON is Decode for callers that return a plain error.
func DecodeJSON(r *http.Request, v any) error {
	if e := Decode(r, v); e != nil {
		return e
	}
	return nil
}
