package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

// MapError turns the errors of loading and running a model (engine,
// registry, scheduler, kernels) into API errors with OpenAI's statuses;
// param names the request field a length or token error is about. Other
// errors are returned as they are (a 500 when written).
func MapError(err error, param string) error {
	var ptl *engine.PromptTooLongError
	var itl *engine.InputTooLongError
	var um *registry.ErrUnknownModel
	var fe *sched.FitError
	var te *kernels.TokenError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		e := BadRequest(param, "%v", err)
		e.Code = Ptr("invalid_token_id")
		return e
	case errors.As(err, new(*kernels.GrammarError)):
		return BadRequest("grammar", "%v", err)
	case errors.Is(err, kernels.ErrGrammarDeadEnd):
		return BadRequest("grammar", "%v", err)
	case errors.As(err, &fe):
		if fe.Never {
			e := BadRequest("model", "the model can never fit this machine: %s", fe.Explanation)
			e.Code = Ptr("model_too_large")
			return e
		}
		return Unavailable(5, "not enough memory for the model right now: %s", fe.Explanation)
	case errors.As(err, &ptl):
		e := BadRequest(param, "This model's maximum context length is %d tokens. However, your prompt is %d tokens (nothing was truncated).", ptl.Limit, ptl.Tokens)
		e.Code = Ptr("context_length_exceeded")
		return e
	case errors.As(err, &itl):
		e := BadRequest(param, "%v", itl)
		e.Code = Ptr("context_length_exceeded")
		return e
	case errors.As(err, &um):
		return NotFound("model_not_found", "The model %q does not exist or cannot be used: %v", um.ID, um.Err)
	case errors.Is(err, engine.ErrQueueFull):
		return Overloaded(1, "the model's request queue is full; retry shortly")
	case errors.Is(err, engine.ErrClosed):
		return Unavailable(1, "the model was unloaded; retry")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &APIError{Status: http.StatusRequestTimeout, Type: "timeout", Message: "request cancelled or timed out: " + err.Error()}
	}
	return err
}
