package server

import (
	"encoding/json"

	"github.com/llmrt/llmrt/runtime/feedback"
	"github.com/llmrt/llmrt/runtime/registry"
)

// CompletionRecorder keeps served completions for feedback
// (runtime/feedback's Store).
type CompletionRecorder interface {
	Record(c feedback.Completion) error
}

// record hands a served completion to the recorder, if any, before the
// response goes out: a client may attach feedback as soon as it has the id.
// A failure is logged; the answer is served regardless.
func (s *Server) record(c feedback.Completion, lease *registry.Lease, req any) {
	if s.cfg.Recorder == nil {
		return
	}
	c.Base = lease.Base
	for _, a := range lease.Adapters {
		c.Adapters = append(c.Adapters, a.Name)
	}
	c.Request, _ = json.Marshal(req)
	if err := s.cfg.Recorder.Record(c); err != nil {
		s.log.Warn("completion not recorded for feedback", "id", c.ID, "err", err)
	}
}

// chatPrompt is a chat request's messages as the client sent them.
func chatPrompt(req *ChatRequest) []feedback.Message {
	out := make([]feedback.Message, len(req.Messages))
	for i, m := range req.Messages {
		out[i] = feedback.Message{Role: m.Role, Content: m.Content.String()}
	}
	return out
}
