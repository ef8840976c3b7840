package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

func ptr[T any](v T) *T { return &v }

func badRequest(param, format string, args ...any) *APIError {
	e := &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: fmt.Sprintf(format, args...)}
	if param != "" {
		e.Param = ptr(param)
	}
	return e
}

func notFound(code, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: ptr(code), Message: fmt.Sprintf(format, args...)}
}

func internalError(err error) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()}
}

func overloaded(retryAfter int, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: ptr("rate_limit_exceeded"), Message: fmt.Sprintf(format, args...), RetryAfter: retryAfter}
}

func unavailable(retryAfter int, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: ptr("unavailable"), Message: fmt.Sprintf(format, args...), RetryAfter: retryAfter}
}

// writeError answers with err in OpenAI's error shape. Errors that are not
// APIErrors become 500s.
func writeError(w http.ResponseWriter, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = internalError(err)
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	json.NewEncoder(w).Encode(map[string]*APIError{"error": ae})
}

// decodeJSON reads a JSON body into v with errors that say what is wrong.
func decodeJSON(r *http.Request, v any) *APIError {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return &APIError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: ptr("request_too_large"),
				Message: fmt.Sprintf("request body is larger than the limit of %d bytes", mbe.Limit)}
		case errors.As(err, &se):
			return badRequest("", "malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			field := strings.TrimPrefix(te.Field, "samplingFields.")
			return badRequest(field, "field %q: expected %s, got JSON %s", field, te.Type, te.Value)
		case err.Error() == "EOF":
			return badRequest("", "request body is empty; expected a JSON object")
		default:
			return badRequest("", "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return badRequest("", "malformed JSON: extra data after the object")
	}
	return nil
}

// Errors and JSON helpers for routes that other packages register with
// Server.Handle (collections, fine-tuning): the same shapes and limits as
// the built-in routes.

// BadRequest is a 400 invalid_request_error naming the offending param.
func BadRequest(param, format string, args ...any) *APIError {
	return badRequest(param, format, args...)
}

// NotFound is a 404 with an error code such as "collection_not_found".
func NotFound(code, format string, args ...any) *APIError { return notFound(code, format, args...) }

// Conflict is a 409, for creating what already exists.
func Conflict(code, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusConflict, Type: "invalid_request_error", Code: ptr(code), Message: fmt.Sprintf(format, args...)}
}

// Unavailable is a 503 for a feature the server was started without.
func Unavailable(format string, args ...any) *APIError { return unavailable(0, format, args...) }

// DecodeJSON reads a JSON request body into v; malformed or oversized
// bodies give a 400 or 413 that says what is wrong.
func DecodeJSON(r *http.Request, v any) error {
	if e := decodeJSON(r, v); e != nil {
		return e
	}
	return nil
}

// WriteJSON answers v with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error { return writeJSON(w, status, v) }
