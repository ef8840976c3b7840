package server

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// maxEmbedInputs bounds the inputs of one embeddings request (OpenAI: 2048).
const maxEmbedInputs = 2048

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) error {
	var req EmbeddingRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.Input.Len() == 0 {
		return httpapi.BadRequest("input", "input is required and must not be empty")
	}
	if req.Input.Len() > maxEmbedInputs {
		return httpapi.BadRequest("input", "at most %d inputs per request, got %d", maxEmbedInputs, req.Input.Len())
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		return httpapi.BadRequest("encoding_format", "encoding_format must be float or base64, got %q", req.EncodingFormat)
	}
	model, lease, err := s.acquire(r, req.Model)
	if err != nil {
		return err
	}
	defer lease.Release()
	e := lease.Engine
	if req.Dimensions != nil && *req.Dimensions != e.Info().Embd {
		return httpapi.BadRequest("dimensions", "this model's embeddings have %d dimensions; dimensions=%d is not supported", e.Info().Embd, *req.Dimensions)
	}
	inputs := make([][]int32, 0, req.Input.Len())
	for i, t := range req.Input.Texts {
		if t == "" {
			return httpapi.BadRequest("input", "input %d is an empty string", i)
		}
		toks, err := e.Tokenize(t, true, false)
		if err != nil {
			return httpapi.Internal(err)
		}
		inputs = append(inputs, toks)
	}
	inputs = append(inputs, req.Input.Tokens...)
	vecs, err := e.Embed(r.Context(), inputs)
	if err != nil {
		if aerr := httpapi.MapError(err, "input"); aerr != err {
			return aerr
		}
		return httpapi.BadRequest("input", "%v", err)
	}
	resp := EmbeddingResponse{Object: "list", Model: model, Data: make([]Embedding, len(vecs))}
	for i, v := range vecs {
		var emb any = v
		if req.EncodingFormat == "base64" {
			buf := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(x))
			}
			emb = base64.StdEncoding.EncodeToString(buf)
		}
		resp.Data[i] = Embedding{Object: "embedding", Index: i, Embedding: emb}
		resp.Usage.PromptTokens += len(inputs[i])
	}
	resp.Usage.TotalTokens = resp.Usage.PromptTokens
	s.metrics.promptTokens.WithLabelValues(model).Add(float64(resp.Usage.PromptTokens))
	return httpapi.WriteJSON(w, http.StatusOK, resp)
}
