package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrt/llmrt/runtime/registry"
)

// metrics are the server's Prometheus series. Engine gauges (queue depth,
// KV use, active sequences) are read from the engines at scrape time by
// engineCollector, so they can never drift from the truth.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	promptTokens *prometheus.CounterVec
	outTokens    *prometheus.CounterVec
	cachedTokens *prometheus.CounterVec
	ttft         *prometheus.HistogramVec
	decodeRate   *prometheus.HistogramVec
	latency      *prometheus.HistogramVec
}

func newMetrics(r *registry.Registry) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrt_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		promptTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrt_prompt_tokens_total", Help: "Prompt tokens processed (including cached).",
		}, []string{"model"}),
		cachedTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrt_prompt_tokens_cached_total", Help: "Prompt tokens served from the prefix cache.",
		}, []string{"model"}),
		outTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrt_completion_tokens_total", Help: "Tokens generated.",
		}, []string{"model"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "llmrt_time_to_first_token_seconds", Help: "Time from request to first generated token.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"model"}),
		decodeRate: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "llmrt_decode_tokens_per_second", Help: "Per-request decode rate after the first token.",
			Buckets: prometheus.ExponentialBuckets(1, 1.6, 16),
		}, []string{"model"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "llmrt_request_duration_seconds", Help: "Request duration by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"endpoint"}),
	}
	m.reg.MustRegister(m.requests, m.promptTokens, m.cachedTokens, m.outTokens, m.ttft, m.decodeRate, m.latency,
		&engineCollector{r: r}, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

var (
	descLoaded   = prometheus.NewDesc("llmrt_models_loaded", "Models loaded.", nil, nil)
	descActive   = prometheus.NewDesc("llmrt_active_sequences", "Sequences generating now.", []string{"model"}, nil)
	descQueue    = prometheus.NewDesc("llmrt_queue_depth", "Requests waiting for a sequence.", []string{"model"}, nil)
	descKVUsed   = prometheus.NewDesc("llmrt_kv_cells_used", "KV-cache cells holding tokens (running and cached).", []string{"model"}, nil)
	descKVTotal  = prometheus.NewDesc("llmrt_kv_cells", "KV-cache cells in the context.", []string{"model"}, nil)
	descSwitches = prometheus.NewDesc("llmrt_adapter_switches_total", "Changes of the active adapter set.", []string{"model"}, nil)
	descMoves    = prometheus.NewDesc("llmrt_sequence_moves_total", "Running sequences moved to a lower id to keep one ubatch per step.", []string{"model"}, nil)
	descSteps    = prometheus.NewDesc("llmrt_decode_steps_total", "llama_decode calls of the generation loop.", []string{"model"}, nil)
	descDecodeS  = prometheus.NewDesc("llmrt_decode_seconds_total", "Time spent in llama_decode.", []string{"model"}, nil)
	descGen      = prometheus.NewDesc("llmrt_engine_generated_tokens_total", "Tokens sampled by the engine.", []string{"model"}, nil)
	descResident = prometheus.NewDesc("llmrt_resident_adapters", "LoRA adapters whose weights are in memory.", []string{"model"}, nil)
	descALoads   = prometheus.NewDesc("llmrt_adapter_loads_total", "Reads of LoRA adapter weights into memory.", []string{"model"}, nil)
	descStepAd   = prometheus.NewDesc("llmrt_step_adapters", "Distinct LoRA adapters per decode step.", []string{"model"}, nil)
)

type engineCollector struct{ r *registry.Registry }

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLoaded, descActive, descQueue, descKVUsed, descKVTotal, descSwitches, descMoves, descSteps, descDecodeS, descGen,
		descResident, descALoads, descStepAd} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	loaded := c.r.Loaded()
	ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(len(loaded)))
	for _, m := range loaded {
		s := m.Stats
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.Active), m.Name)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(s.Queued), m.Name)
		ch <- prometheus.MustNewConstMetric(descKVUsed, prometheus.GaugeValue, float64(s.KVCellsUsed), m.Name)
		ch <- prometheus.MustNewConstMetric(descKVTotal, prometheus.GaugeValue, float64(s.KVCells), m.Name)
		ch <- prometheus.MustNewConstMetric(descSwitches, prometheus.CounterValue, float64(s.AdapterSwitches), m.Name)
		ch <- prometheus.MustNewConstMetric(descMoves, prometheus.CounterValue, float64(s.SequenceMoves), m.Name)
		ch <- prometheus.MustNewConstMetric(descSteps, prometheus.CounterValue, float64(s.DecodeSteps), m.Name)
		ch <- prometheus.MustNewConstMetric(descDecodeS, prometheus.CounterValue, s.DecodeSeconds, m.Name)
		ch <- prometheus.MustNewConstMetric(descGen, prometheus.CounterValue, float64(s.GeneratedTokens), m.Name)
		ch <- prometheus.MustNewConstMetric(descResident, prometheus.GaugeValue, float64(s.ResidentAdapters), m.Name)
		ch <- prometheus.MustNewConstMetric(descALoads, prometheus.CounterValue, float64(s.AdapterLoads), m.Name)
		ch <- stepAdapters(s.StepAdapters, m.Name)
	}
}

// stepAdapters is the histogram of distinct adapters per decode step, from
// the engine's count of steps by number of adapters.
func stepAdapters(counts []int64, model string) prometheus.Metric {
	buckets := map[float64]uint64{}
	var n uint64
	var sum float64
	for k := 0; k < max(len(counts), 9); k++ { // buckets 0..8 at least, for a stable series
		if k < len(counts) {
			n += uint64(counts[k])
			sum += float64(k) * float64(counts[k])
		}
		buckets[float64(k)] = n
	}
	return prometheus.MustNewConstHistogram(descStepAd, n, sum, buckets, model)
}
