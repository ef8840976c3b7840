package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// Model control for operators (the web console's buttons):
//
//	POST /v1/system/load        {"model", "keep_alive"}  load now (a model id, adapters included)
//	POST /v1/system/unload      {"model"}                unload an idle model
//	POST /v1/system/keep_alive  {"model", "keep_alive"}  how long an idle model stays loaded
//
// keep_alive is a duration ("10m", "90s") or a number of seconds; negative
// keeps the model loaded until unloaded, 0 unloads it as soon as it is idle.

type modelControl struct {
	Model     string          `json:"model"`
	KeepAlive json.RawMessage `json:"keep_alive"`
}

// keepAlive parses the keep_alive field; ok is false when it is absent.
func (c *modelControl) keepAlive() (d time.Duration, ok bool, aerr *httpapi.APIError) {
	raw := c.KeepAlive
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw) // a bare number
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(secs * float64(time.Second)), true, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false, httpapi.BadRequest("keep_alive", "keep_alive must be a duration such as \"10m\" or a number of seconds (negative: never unload), got %s", raw)
	}
	return d, true, nil
}

func (s *Server) decodeControl(r *http.Request) (*modelControl, error) {
	var c modelControl
	if err := httpapi.DecodeJSON(r, &c); err != nil {
		return nil, err
	}
	if c.Model == "" {
		return nil, httpapi.BadRequest("model", "model is required")
	}
	return &c, nil
}

// loadedModel answers the registry's view of one loaded model.
func (s *Server) loadedModel(w http.ResponseWriter, name string) error {
	for _, m := range s.reg.Loaded() {
		if m.Name == name {
			return httpapi.WriteJSON(w, http.StatusOK, m)
		}
	}
	return httpapi.NotFound("model_not_loaded", "model %q is not loaded", name)
}

func (s *Server) loadModel(w http.ResponseWriter, r *http.Request) error {
	c, err := s.decodeControl(r)
	if err != nil {
		return err
	}
	d, setKA, aerr := c.keepAlive()
	if aerr != nil {
		return aerr
	}
	lease, err := s.reg.Acquire(r.Context(), c.Model)
	if err != nil {
		return httpapi.MapError(err, "model")
	}
	base := lease.Base
	// Set the keep-alive before the lease ends, so that keep_alive 0 does
	// not unload the model between the two.
	if setKA {
		err = s.reg.SetKeepAlive(base, d)
	}
	lease.Release()
	if err != nil {
		return httpapi.Internal(fmt.Errorf("keep-alive of %s: %w", base, err))
	}
	return s.loadedModel(w, base)
}

func (s *Server) unloadModel(w http.ResponseWriter, r *http.Request) error {
	c, err := s.decodeControl(r)
	if err != nil {
		return err
	}
	name := s.baseOf(c.Model)
	loaded := false
	for _, m := range s.reg.Loaded() {
		loaded = loaded || m.Name == name
	}
	if !loaded {
		return httpapi.NotFound("model_not_loaded", "model %q is not loaded", name)
	}
	if err := s.reg.Unload(name); err != nil {
		return httpapi.Conflict("model_busy", "%v", err)
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": name, "object": "model", "loaded": false})
}

func (s *Server) setKeepAlive(w http.ResponseWriter, r *http.Request) error {
	c, err := s.decodeControl(r)
	if err != nil {
		return err
	}
	d, ok, aerr := c.keepAlive()
	if aerr != nil {
		return aerr
	}
	if !ok {
		return httpapi.BadRequest("keep_alive", "keep_alive is required")
	}
	name := s.baseOf(c.Model)
	if err := s.reg.SetKeepAlive(name, d); err != nil {
		return httpapi.NotFound("model_not_loaded", "%v", err)
	}
	if d == 0 {
		// An idle model is gone already.
		for _, m := range s.reg.Loaded() {
			if m.Name == name {
				return httpapi.WriteJSON(w, http.StatusOK, m)
			}
		}
		return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": name, "object": "model", "loaded": false})
	}
	return s.loadedModel(w, name)
}

// baseOf maps a model id (maybe an adapter's) to its base model's name.
func (s *Server) baseOf(id string) string {
	if base, _, err := s.reg.ParseID(id); err == nil {
		return base
	}
	return id
}

// console serves the web console's pages: no API key (every API call the
// page makes carries one), but the host check and the page's headers.
func (s *Server) console(w http.ResponseWriter, r *http.Request) error {
	s.cfg.Console.ServeHTTP(w, r)
	return nil
}
