package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// Arm names one way of answering.
type Arm string

// The four arms.
const (
	ArmBase   Arm = "base"
	ArmRAG    Arm = "rag"
	ArmFT     Arm = "fine-tuned"
	ArmRAGFT  Arm = "rag+fine-tuned"
	maxAnswer     = 64
)

// Retriever finds passages in a collection (runtime/rag's Retriever: the
// same retrieval path as the server's chat "rag" extension).
type Retriever interface {
	Retrieve(ctx context.Context, collection string, q grounding.Query) (grounding.Retrieval, error)
	HasCollection(name string) bool
}

// Judge grades an answer when --judge names a model.
type Judge struct {
	Engine *engine.Engine
	Model  string
}

// JudgePrompt is the instruction the judge model gets (printed in the report).
const JudgePrompt = "You grade answers. Question: %s\nReference answer: %s\nCandidate answer: %s\n" +
	"Is the candidate answer correct? Reply with one word: yes or no.\nVerdict:"

// Options configure an evaluation.
type Options struct {
	Engine      *engine.Engine
	ModelName   string
	Adapter     string // engine adapter name ("" : no fine-tuned arms)
	AdapterFile string
	Retriever   Retriever
	Collection  string // "" : no RAG arms
	TopK        int
	// Stages are the retrieval stages of the RAG arms; RerankModel names
	// the reranking model ("" : the retriever's, else the answering model).
	Stages      grounding.Stages
	RerankModel string
	// Ablation also answers with the base model and retrieval under each
	// stage alone, none and all (see AblationStages), for the ablation
	// table.
	Ablation    bool
	Judge       *Judge
	Concurrency int
	MaxTokens   int
	// FutureQueries amortises the fine-tuning cost (device-seconds from the
	// adapter's metrics file) over this many queries.
	FutureQueries int
	// System is the system message of every arm.
	System   string
	Progress func(done, total int)
}

// Answer is one arm's answer to one question.
type Answer struct {
	Arm              Arm      `json:"arm"`
	Line             int      `json:"line"`
	Question         string   `json:"question"`
	Gold             []string `json:"gold"`
	Answer           string   `json:"answer"`
	Scores           Scores   `json:"scores"`
	Judged           *bool    `json:"judged_correct,omitempty"`
	Retrieved        []string `json:"retrieved,omitempty"`
	RetrievedChunks  []uint64 `json:"retrieved_chunks,omitempty"`
	Cited            []int    `json:"cited,omitempty"`
	RetrievalHit     *bool    `json:"retrieval_hit,omitempty"`
	PromptTokens     int      `json:"prompt_tokens"`
	CompletionTokens int      `json:"completion_tokens"`
	LatencyS         float64  `json:"latency_s"`
}

// ArmSummary aggregates one arm.
type ArmSummary struct {
	Arm               Arm     `json:"arm"`
	Questions         int     `json:"questions"`
	ExactMatch        float64 `json:"exact_match"`
	F1                float64 `json:"f1"`
	Contains          float64 `json:"contains"`
	Judged            float64 `json:"judged,omitempty"`
	RetrievalHitAtK   float64 `json:"retrieval_hit_at_k,omitempty"`
	LatencyP50S       float64 `json:"latency_p50_s"`
	LatencyP95S       float64 `json:"latency_p95_s"`
	PromptTokens      float64 `json:"prompt_tokens_per_question"`
	CompletionTokens  float64 `json:"completion_tokens_per_question"`
	DeviceSecondsPerQ float64 `json:"device_seconds_per_question"`
	TrainingSecondsPQ float64 `json:"training_seconds_per_question,omitempty"`
	CostPerQuestionS  float64 `json:"cost_per_question_s"`
	// DeltaF1 is the F1 gained over the base arm, ROI that gain per
	// device-second of cost per question; each with the 95% bootstrap
	// interval over questions (see Bootstrap).
	DeltaF1     float64 `json:"delta_f1,omitempty"`
	DeltaF1Low  float64 `json:"delta_f1_ci_low,omitempty"`
	DeltaF1High float64 `json:"delta_f1_ci_high,omitempty"`
	ROI         float64 `json:"roi_f1_per_second"`
	ROILow      float64 `json:"roi_ci_low,omitempty"`
	ROIHigh     float64 `json:"roi_ci_high,omitempty"`
}

// Report is a whole evaluation.
type Report struct {
	Model         string       `json:"model"`
	Adapter       string       `json:"adapter,omitempty"`
	Collection    string       `json:"collection,omitempty"`
	TopK          int          `json:"top_k,omitempty"`
	Stages        string       `json:"stages,omitempty"`
	Judge         string       `json:"judge,omitempty"`
	JudgePrompt   string       `json:"judge_prompt,omitempty"`
	FutureQueries int          `json:"future_queries"`
	TrainingS     float64      `json:"training_device_seconds,omitempty"`
	PeakRSSBytes  int64        `json:"peak_rss_bytes"`
	Started       time.Time    `json:"started"`
	DurationS     float64      `json:"duration_s"`
	Arms          []ArmSummary `json:"arms"`
	Answers       []Answer     `json:"answers"`
	// Ablation is the RAG arm (base model) under each set of retrieval
	// stages, with its answers in AblationAnswers.
	Ablation        []AblationRow `json:"ablation,omitempty"`
	AblationAnswers []Answer      `json:"ablation_answers,omitempty"`
}

// Arms lists the arms the options allow, in report order.
func (o Options) Arms() []Arm {
	arms := []Arm{ArmBase}
	if o.Collection != "" {
		arms = append(arms, ArmRAG)
	}
	if o.Adapter != "" {
		arms = append(arms, ArmFT)
	}
	if o.Collection != "" && o.Adapter != "" {
		arms = append(arms, ArmRAGFT)
	}
	return arms
}

// Variants is how many runs over the questions the options make: one per
// arm, and one per stage set of the ablation.
func (o Options) Variants() int {
	n := len(o.Arms())
	if o.Ablation && o.Collection != "" {
		n += len(AblationStages(o.Stages.MultiQuery))
	}
	return n
}

// Check refuses missing inputs before any work starts.
func (o Options) Check() error {
	if o.Engine == nil {
		return errors.New("eval: no model")
	}
	if o.Collection != "" {
		if o.Retriever == nil || !o.Retriever.HasCollection(o.Collection) {
			return fmt.Errorf("eval: collection %q does not exist (create it with `llmrt index add --collection %s PATH`)", o.Collection, o.Collection)
		}
	}
	if o.AdapterFile != "" {
		if _, err := os.Stat(o.AdapterFile); err != nil {
			return fmt.Errorf("eval: adapter: %w", err)
		}
	}
	return nil
}

// Run answers every question in every arm and scores the answers.
func Run(ctx context.Context, qs []Question, o Options) (*Report, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	if o.TopK <= 0 {
		o.TopK = 4
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = maxAnswer
	}
	if o.FutureQueries <= 0 {
		o.FutureQueries = 1000
	}
	rep := &Report{Model: o.ModelName, Adapter: o.AdapterFile, Collection: o.Collection, FutureQueries: o.FutureQueries, Started: time.Now()}
	if o.Collection != "" {
		rep.TopK = o.TopK
	}
	if o.Judge != nil {
		rep.Judge, rep.JudgePrompt = o.Judge.Model, JudgePrompt
	}
	if o.AdapterFile != "" {
		rep.TrainingS = TrainingDeviceSeconds(o.AdapterFile)
	}
	if o.Collection != "" {
		rep.Stages = o.Stages.String()
	}
	arms := o.Arms()
	// A variant is a run over every question: one per arm, then (for the
	// ablation) the RAG arm under each set of stages.
	type variant struct {
		arm      Arm
		stages   grounding.Stages
		ablation int // index into ablation, -1 for the arms
	}
	var variants []variant
	for _, arm := range arms {
		variants = append(variants, variant{arm, o.Stages, -1})
	}
	var ablation []grounding.Stages
	if o.Ablation && o.Collection != "" {
		ablation = AblationStages(o.Stages.MultiQuery)
		for i, st := range ablation {
			variants = append(variants, variant{ArmRAG, st, i})
		}
	}
	type job struct {
		v variant
		q Question
	}
	jobs := make(chan job)
	results := make([]Answer, 0, len(arms)*len(qs))
	ablated := make([][]Answer, len(ablation))
	var mu sync.Mutex
	var firstErr error
	done := 0
	total := len(variants) * len(qs)
	armDevice := map[Arm]float64{}
	var wg sync.WaitGroup
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				a, err := answer(ctx, o, j.v.arm, j.q, j.v.stages)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("%s arm (stages %s), question on line %d: %w", j.v.arm, j.v.stages, j.q.Line, err)
				}
				if err == nil && j.v.ablation < 0 {
					results = append(results, a)
					armDevice[j.v.arm] += a.LatencyS / float64(o.Concurrency)
				} else if err == nil {
					ablated[j.v.ablation] = append(ablated[j.v.ablation], a)
				}
				done++
				if o.Progress != nil {
					o.Progress(done, total)
				}
				mu.Unlock()
			}
		}()
	}
	// Variant by variant, so adapter switches happen once per arm.
feed:
	for _, v := range variants {
		for _, q := range qs {
			select {
			case jobs <- job{v, q}:
			case <-ctx.Done():
				break feed
			}
			mu.Lock()
			stop := firstErr != nil
			mu.Unlock()
			if stop {
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	byLine := func(as []Answer) {
		sort.Slice(as, func(i, j int) bool {
			if as[i].Arm != as[j].Arm {
				return armIndex(arms, as[i].Arm) < armIndex(arms, as[j].Arm)
			}
			return as[i].Line < as[j].Line
		})
	}
	byLine(results)
	rep.Answers = results
	for i, st := range ablation {
		byLine(ablated[i])
		rep.Ablation = append(rep.Ablation, ablationRow(st, ablated[i]))
		rep.AblationAnswers = append(rep.AblationAnswers, ablated[i]...)
	}
	rep.DurationS = time.Since(rep.Started).Seconds()
	rep.PeakRSSBytes = peakRSS()
	for i, arm := range arms {
		s := summarize(arm, results, armDevice[arm], len(qs))
		if arm == ArmFT || arm == ArmRAGFT {
			s.TrainingSecondsPQ = rep.TrainingS / float64(o.FutureQueries)
		}
		s.CostPerQuestionS = s.DeviceSecondsPerQ + s.TrainingSecondsPQ
		if arm != ArmBase {
			gainOverBase(&s, results, o.Concurrency, uint64(i))
		}
		rep.Arms = append(rep.Arms, s)
	}
	return rep, nil
}

// Bootstrap is how many resamples of the questions give the intervals of
// an arm's gain over base and of its ROI.
const Bootstrap = 2000

// gainOverBase fills s's F1 gain over the base arm and its ROI, each with
// a 95% interval from a paired bootstrap over the questions both arms
// answered: resampling questions redraws the arm's and the base's F1 and
// the arm's serving time together.
func gainOverBase(s *ArmSummary, all []Answer, concurrency int, seed uint64) {
	base := map[int]float64{}
	for _, a := range all {
		if a.Arm == ArmBase {
			base[a.Line] = a.Scores.F1
		}
	}
	var diff, cost []float64
	for _, a := range all {
		if b, ok := base[a.Line]; ok && a.Arm == s.Arm {
			diff = append(diff, a.Scores.F1-b)
			cost = append(cost, a.LatencyS/float64(max(1, concurrency)))
		}
	}
	if len(diff) == 0 {
		return
	}
	roi := func(d, c float64) float64 {
		if c+s.TrainingSecondsPQ <= 0 {
			return 0
		}
		return d / (c + s.TrainingSecondsPQ)
	}
	n := float64(len(diff))
	var sumD, sumC float64
	for i := range diff {
		sumD += diff[i]
		sumC += cost[i]
	}
	s.DeltaF1 = sumD / n
	s.ROI = roi(s.DeltaF1, sumC/n)
	r := rand.New(rand.NewPCG(0x5eed, seed))
	ds, rs := make([]float64, Bootstrap), make([]float64, Bootstrap)
	for b := range ds {
		var d, c float64
		for range diff {
			k := r.IntN(len(diff))
			d += diff[k]
			c += cost[k]
		}
		ds[b], rs[b] = d/n, roi(d/n, c/n)
	}
	sort.Float64s(ds)
	sort.Float64s(rs)
	s.DeltaF1Low, s.DeltaF1High = percentile(ds, 0.025), percentile(ds, 0.975)
	s.ROILow, s.ROIHigh = percentile(rs, 0.025), percentile(rs, 0.975)
}

func armIndex(arms []Arm, a Arm) int {
	for i, x := range arms {
		if x == a {
			return i
		}
	}
	return len(arms)
}

// armAdapters are the adapters an arm answers with.
func (o Options) armAdapters(arm Arm) []engine.AdapterRef {
	if arm == ArmFT || arm == ArmRAGFT {
		return []engine.AdapterRef{{Name: o.Adapter}}
	}
	return nil
}

// Prompt is the conversation an arm sends for a question and, for RAG
// arms, what was retrieved for it: retrieval through the Retriever with
// stages, the answering model (with the arm's adapter) rewriting queries,
// and grounding.Ground building the prompt, exactly as the server's chat
// "rag" extension does for the same messages.
func (o Options) Prompt(ctx context.Context, arm Arm, q Question, stages grounding.Stages) ([]engine.ChatMessage, *grounding.Retrieval, error) {
	var msgs []engine.ChatMessage
	if o.System != "" {
		msgs = append(msgs, engine.ChatMessage{Role: "system", Content: o.System})
	}
	msgs = append(msgs, engine.ChatMessage{Role: "user", Content: q.Question})
	if arm != ArmRAG && arm != ArmRAGFT {
		return msgs, nil, nil
	}
	res, err := o.Retriever.Retrieve(ctx, o.Collection, grounding.Query{Text: q.Question, K: o.TopK, Stages: stages,
		RerankModel: o.RerankModel, Model: o.Engine, Adapters: o.armAdapters(arm)})
	if err != nil {
		return nil, nil, fmt.Errorf("retrieve: %w", err)
	}
	grounded, err := grounding.Ground(msgs, res.Passages)
	if err != nil {
		return nil, nil, err
	}
	return grounded, &res, nil
}

func answer(ctx context.Context, o Options, arm Arm, q Question, stages grounding.Stages) (Answer, error) {
	a := Answer{Arm: arm, Line: q.Line, Question: q.Question, Gold: q.Golds()}
	msgs, ret, err := o.Prompt(ctx, arm, q, stages)
	if err != nil {
		return a, err
	}
	if ret != nil {
		for _, p := range ret.Passages {
			a.Retrieved = append(a.Retrieved, p.Source)
			a.RetrievedChunks = append(a.RetrievedChunks, p.ChunkID)
		}
		if hit, ok := q.retrievalHit(ret.Passages); ok {
			a.RetrievalHit = &hit
		}
	}
	res, err := generate(ctx, o.Engine, msgs, o.armAdapters(arm), o.MaxTokens)
	if err != nil {
		return a, err
	}
	a.Answer = strings.TrimSpace(res.Text)
	if ret != nil {
		a.Cited = grounding.Cited(a.Answer, len(ret.Passages))
	}
	a.Scores = Score(a.Answer, q.Golds())
	a.PromptTokens, a.CompletionTokens = res.PromptTokens, res.CompletionTokens
	a.LatencyS = res.Duration.Seconds()
	if o.Judge != nil {
		prompt := fmt.Sprintf(JudgePrompt, q.Question, q.Answer, a.Answer)
		toks, err := o.Judge.Engine.Tokenize(prompt, true, false)
		if err != nil {
			return a, err
		}
		jr, err := o.Judge.Engine.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: 3})
		if err != nil {
			return a, fmt.Errorf("judge: %w", err)
		}
		ok := strings.HasPrefix(strings.ToLower(strings.TrimSpace(jr.Text)), "yes")
		a.Judged = &ok
	}
	return a, nil
}

// generate renders msgs with the model's chat template and answers greedily.
func generate(ctx context.Context, e *engine.Engine, msgs []engine.ChatMessage, adapters []engine.AdapterRef, maxTokens int) (engine.Result, error) {
	toks, err := e.ChatTokens(msgs, nil, true)
	if err != nil {
		return engine.Result{}, err
	}
	if len(toks) >= e.CtxPerSeq() {
		toks = toks[len(toks)-e.CtxPerSeq()+maxTokens+1:]
	}
	return e.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: maxTokens, Adapters: adapters, Stop: []string{"\n\n"}})
}

func summarize(arm Arm, all []Answer, deviceS float64, n int) ArmSummary {
	s := ArmSummary{Arm: arm}
	var lat []float64
	var hits, hitN, judged, judgedN int
	for _, a := range all {
		if a.Arm != arm {
			continue
		}
		s.Questions++
		s.ExactMatch += a.Scores.ExactMatch
		s.F1 += a.Scores.F1
		s.Contains += a.Scores.Contains
		s.PromptTokens += float64(a.PromptTokens)
		s.CompletionTokens += float64(a.CompletionTokens)
		lat = append(lat, a.LatencyS)
		if a.RetrievalHit != nil {
			hitN++
			if *a.RetrievalHit {
				hits++
			}
		}
		if a.Judged != nil {
			judgedN++
			if *a.Judged {
				judged++
			}
		}
	}
	if s.Questions == 0 {
		return s
	}
	q := float64(s.Questions)
	s.ExactMatch /= q
	s.F1 /= q
	s.Contains /= q
	s.PromptTokens /= q
	s.CompletionTokens /= q
	if hitN > 0 {
		s.RetrievalHitAtK = float64(hits) / float64(hitN)
	}
	if judgedN > 0 {
		s.Judged = float64(judged) / float64(judgedN)
	}
	sort.Float64s(lat)
	s.LatencyP50S = percentile(lat, 0.5)
	s.LatencyP95S = percentile(lat, 0.95)
	s.DeviceSecondsPerQ = deviceS / q
	return s
}

// percentile of sorted values by linear interpolation.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := p * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}
