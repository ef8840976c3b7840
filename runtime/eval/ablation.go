package eval

import (
	"fmt"
	"io"
	"sort"

	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// AblationRow is the RAG arm (base model) under one set of retrieval
// stages.
type AblationRow struct {
	Stages     string           `json:"stages"`
	Config     grounding.Stages `json:"config"`
	Questions  int              `json:"questions"`
	HitAtK     float64          `json:"retrieval_hit_at_k"`
	F1         float64          `json:"f1"`
	ExactMatch float64          `json:"exact_match"`
	Contains   float64          `json:"contains"`
	// LatencyP50S is the median time to answer, retrieval stages included.
	LatencyP50S  float64 `json:"latency_p50_s"`
	PromptTokens float64 `json:"prompt_tokens_per_question"`
}

// AblationStages are the stage sets of the ablation: none, each stage
// alone, and all of them; multiQuery is the number of rewrites (3 when
// not positive).
func AblationStages(multiQuery int) []grounding.Stages {
	if multiQuery <= 0 {
		multiQuery = 3
	}
	return []grounding.Stages{
		{},
		{MultiQuery: multiQuery},
		{HyDE: true},
		{Rerank: true},
		{MultiQuery: multiQuery, HyDE: true, Rerank: true},
	}
}

func ablationRow(st grounding.Stages, as []Answer) AblationRow {
	r := AblationRow{Stages: st.String(), Config: st, Questions: len(as)}
	if len(as) == 0 {
		return r
	}
	var lat []float64
	hitN, hits := 0, 0
	for _, a := range as {
		r.F1 += a.Scores.F1
		r.ExactMatch += a.Scores.ExactMatch
		r.Contains += a.Scores.Contains
		r.PromptTokens += float64(a.PromptTokens)
		lat = append(lat, a.LatencyS)
		if a.RetrievalHit != nil {
			hitN++
			if *a.RetrievalHit {
				hits++
			}
		}
	}
	n := float64(len(as))
	r.F1 /= n
	r.ExactMatch /= n
	r.Contains /= n
	r.PromptTokens /= n
	if hitN > 0 {
		r.HitAtK = float64(hits) / float64(hitN)
	}
	sort.Float64s(lat)
	r.LatencyP50S = percentile(lat, 0.5)
	return r
}

// AblationMarkdown writes the ablation table: one row per set of
// retrieval stages, with retrieval hit@k and answer scores (nothing when
// the evaluation ran no ablation).
func (r *Report) AblationMarkdown(w io.Writer) {
	if len(r.Ablation) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Retrieval stages (ablation, base model, top %d)\n\n", r.TopK)
	fmt.Fprintln(w, "| stages | hit@k | F1 | exact match | contains | p50 s | prompt tok/q |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, a := range r.Ablation {
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f |\n", a.Stages, a.HitAtK, a.F1, a.ExactMatch, a.Contains, a.LatencyP50S, a.PromptTokens)
	}
}
