package server

import "github.com/llmrt/llmrt/kernels"

func (s *Server) applyResponseFormat(rf *ResponseFormat, sp *kernels.SamplerParams) *APIError {
	if rf == nil || rf.Type == "" || rf.Type == "text" {
		return nil
	}
	return badRequest("response_format", "pending")
}
