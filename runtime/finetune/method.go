package finetune

import (
	"fmt"

	"github.com/llmrt/llmrt/runtime/httpapi"
)

// jobMethod is a job's training method in OpenAI's shape:
//
//	{"type": "supervised", "supervised": {"hyperparameters": {...}}}
//	{"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, ...}}}
//
// Hyperparameters given there take the place of the job's top-level ones.
// llmrt also reads "sft_weight" (the chosen answers' own loss, RPO) in
// the dpo hyperparameters.
type jobMethod struct {
	Type      string
	Hyper     Hyperparameters
	Beta      float64
	SFTWeight float64
}

// parseMethod validates a request's method (nil: supervised) and fills
// hp from the method's hyperparameters.
func parseMethod(m map[string]any, hp *Hyperparameters) (jobMethod, error) {
	jm := jobMethod{Type: MethodSupervised}
	if m == nil {
		return jm, nil
	}
	typ, _ := m["type"].(string)
	switch typ {
	case "", MethodSupervised:
	case MethodDPO:
		jm.Type = MethodDPO
	default:
		return jm, httpapi.BadRequest("method.type", "method.type %q is not supported (supervised or dpo)", typ)
	}
	sub, _ := m[jm.Type].(map[string]any)
	h, _ := sub["hyperparameters"].(map[string]any)
	for k, dst := range map[string]*any{"n_epochs": &hp.NEpochs, "batch_size": &hp.BatchSize, "learning_rate_multiplier": &hp.LearningRateMultiplier} {
		if v, ok := h[k]; ok {
			*dst = v
		}
	}
	if jm.Type == MethodDPO {
		beta, err := number(h["beta"], 0.1)
		if err != nil || !(beta > 0) || beta > 100 {
			return jm, httpapi.BadRequest("method.dpo.hyperparameters.beta", "beta must be a positive number or \"auto\", got %v", h["beta"])
		}
		sft, err := number(h["sft_weight"], 0)
		if err != nil || sft < 0 || sft > 100 {
			return jm, httpapi.BadRequest("method.dpo.hyperparameters.sft_weight", "sft_weight must be a number >= 0, got %v", h["sft_weight"])
		}
		jm.Beta, jm.SFTWeight = beta, sft
	}
	return jm, nil
}

// shape is the method as a job shows it, with its settled hyperparameters.
func (jm jobMethod) shape(hp Hyperparameters) map[string]any {
	h := map[string]any{"n_epochs": hp.NEpochs, "batch_size": hp.BatchSize, "learning_rate_multiplier": hp.LearningRateMultiplier}
	if jm.Type == MethodDPO {
		h["beta"] = jm.Beta
		if jm.SFTWeight > 0 {
			h["sft_weight"] = jm.SFTWeight
		}
	}
	return map[string]any{"type": jm.Type, jm.Type: map[string]any{"hyperparameters": h}}
}

// methodOf reads back a stored job's method.
func methodOf(j *Job) (jobMethod, error) {
	hp := j.Hyperparameters
	jm, err := parseMethod(j.Method, &hp)
	if err != nil {
		return jm, fmt.Errorf("job %s: %w", j.ID, err)
	}
	return jm, nil
}
