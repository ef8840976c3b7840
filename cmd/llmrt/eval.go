package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

func (a *app) evalCmd() *cobra.Command {
	var mf modelFlags
	var data, collection, adapter, judge, out, system, rerankModel string
	var topK, concurrency, maxTokens, future int
	var promote bool
	var margin float64
	var metric string
	var stages grounding.Stages
	var ablation bool
	cmd := &cobra.Command{
		Use:   "eval -m BASE --data qa.jsonl [--collection NAME] [--adapter ADAPTER] [--judge MODEL]",
		Short: "Measure base vs RAG vs fine-tuned vs both on your questions, with cost",
		Long: `eval answers every question of qa.jsonl ({"question", "answer"} with optional
"aliases" and "context_ids") in up to four arms: the base model, RAG (with
--collection), fine-tuned (with --adapter), and RAG + fine-tuned. It scores
exact match, token F1 and answer-contained (and a judge model's verdict with
--judge), the retrieval hit rate at k for RAG arms, and the cost: latency
p50/p95, tokens, device-seconds per question, the adapter's training cost
amortised over --future-queries, and accuracy gained over base per second.

The RAG arms retrieve and build their prompt exactly as llmrt serve's chat
"rag" extension does. Retrieval stages: --multi-query N and --hyde rewrite
the question with the model, --rerank reranks the candidates (with
--rerank-model, a reranking GGUF, else the model itself); --ablation also
runs the RAG arm with each stage alone, none and all, and prints a table of
retrieval hit@k and answer F1 per stage set.

It prints a summary per arm (F1, the gain over base and its ROI with 95%
bootstrap intervals over the questions, latency, cost) and writes report.md,
results.json (every answer and score) and chart.svg (chart.png when
rsvg-convert is installed) into --out.

With --promote and --adapter NAME@N (a version llmrt tune made), eval is the
promotion gate: the version is compared on these held-out questions with the
promoted version of NAME (or the base model when none is), by --metric, and
promoted only when it is better by at least --margin. The scores, the gain and
the margin are printed; a refusal says why and exits 1. Running servers serve
the promoted version from their next request on; every version stays loadable
as BASE+NAME@N.`,
		Example: `  llmrt eval -m qwen2.5-0.5b --data examples/aurora/qa.jsonl --collection aurora --adapter aurora
  llmrt eval -m qwen2.5-0.5b --data held-out.jsonl --adapter support@3 --promote --margin 0.02
  llmrt eval -m qwen2.5-0.5b --data qa.jsonl --collection aurora --rerank --rerank-model bge-reranker-v2-m3 --ablation`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if data == "" {
				return usageError{errors.New("--data is required")}
			}
			if stages.MultiQuery < 0 || stages.MultiQuery > 8 {
				return usageError{fmt.Errorf("--multi-query must be between 0 and 8, got %d", stages.MultiQuery)}
			}
			if rerankModel != "" {
				stages.Rerank = true
			}
			if (stages.Any() || ablation) && collection == "" {
				return usageError{errors.New("retrieval stages and --ablation need --collection")}
			}
			// Every input is checked before any model loads.
			qs, err := eval.LoadQuestions(data)
			if err != nil {
				return err
			}
			// --adapter (from the model flags) names the fine-tuned arms'
			// adapter; the base arms run without it.
			if len(mf.adapters) > 1 {
				return usageError{errors.New("eval takes one --adapter")}
			}
			if len(mf.adapters) == 1 {
				adapter, mf.adapters = mf.adapters[0], nil
			}
			// -m BASE+NAME names the base and the fine-tuned arms' adapter.
			t, err := a.resolveTarget(ctx, mf.model, true)
			if err != nil {
				return err
			}
			// The promotion gate's candidate: --adapter NAME@N, or the
			// adapter of -m BASE+NAME@N.
			candidate := adapter
			if _, ad, ok := names.SplitAdapter(mf.model); ok && candidate == "" && len(t.Adapters) > 0 {
				candidate = ad
			}
			if promote && candidate == "" {
				return usageError{errors.New("--promote needs --adapter NAME@N")}
			}
			adapterPath := ""
			if len(t.Adapters) > 0 {
				if adapter != "" {
					return usageError{fmt.Errorf("-m %s already names an adapter: leave out --adapter %s", mf.model, adapter)}
				}
				adapterPath = t.Adapters[0].Path
				mf.model = t.Path
			}
			if adapter != "" {
				if adapterPath, err = a.resolveAdapter(adapter); err != nil {
					return err
				}
			}
			var retriever *rag.Retriever
			if collection != "" {
				s, err := rag.OpenStore(filepath.Join(a.home, "collections"), rag.StoreOptions{})
				if err != nil {
					return err
				}
				model, err := s.EmbeddingModel(collection)
				s.Close()
				if errors.Is(err, rag.ErrNotFound) {
					return fmt.Errorf("collection %q does not exist (create it with llmrt index add --collection %s PATH)", collection, collection)
				}
				if err != nil {
					return err
				}
				// The collection is embedded with the model it was built with.
				ef := mf
				ef.model, ef.adapters = model, nil
				emb, _, err := a.openEngine(ctx, &ef, 1)
				if err != nil {
					return err
				}
				defer emb.Close()
				// Read-only: eval runs beside a server that holds the collection.
				store, err := rag.OpenStore(filepath.Join(a.home, "collections"), rag.StoreOptions{Embedder: rag.EngineEmbedder{E: emb, Model: model}, ReadOnly: true})
				if err != nil {
					return err
				}
				defer store.Close()
				retriever = &rag.Retriever{Store: store}
				if rerankModel != "" {
					rf := mf
					rf.model, rf.adapters = rerankModel, nil
					re, _, err := a.openEngine(ctx, &rf, 1)
					if err != nil {
						return err
					}
					defer re.Close()
					retriever.RerankModel = rerankModel
					retriever.Rerankers = func(string) rag.Reranker { return rag.EngineReranker{E: re, Model: rerankModel} }
				}
			}
			par := max(1, concurrency)
			e, _, err := a.openEngine(ctx, &mf, par)
			if err != nil {
				return err
			}
			defer e.Close()
			opt := eval.Options{Engine: e, ModelName: t.Base, Collection: collection, TopK: topK, Concurrency: par,
				MaxTokens: maxTokens, FutureQueries: future, System: system, Stages: stages, Ablation: ablation}
			if retriever != nil {
				opt.Retriever = retriever
			}
			if adapterPath != "" {
				if err := e.LoadAdapter("eval", adapterPath); err != nil {
					return err
				}
				opt.Adapter, opt.AdapterFile = "eval", adapterPath
			}
			if judge != "" {
				jf := mf
				jf.model, jf.adapters = judge, nil
				je, _, err := a.openEngine(ctx, &jf, 1)
				if err != nil {
					return err
				}
				defer je.Close()
				opt.Judge = &eval.Judge{Engine: je, Model: judge}
			}
			if err := opt.Check(); err != nil {
				return err
			}
			bar := newProgress(a.stderr, a.log, "eval", "answers", int64(len(qs)*opt.Variants()))
			opt.Progress = func(done, total int) { bar.Set(int64(done), int64(total)) }
			rep, err := eval.Run(ctx, qs, opt)
			if err != nil {
				bar.Abort()
				return err
			}
			bar.Finish()
			if out == "" {
				out = "eval-" + time.Now().Format("20060102-150405")
			}
			files, err := rep.Write(out)
			if err != nil {
				return err
			}
			// The terminal gets the summary; every answer is in the files.
			if err := rep.Summary(a.stdout); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "\nreport  %s\nresults %s\nchart   %s\n", files.Markdown, files.JSON, files.SVG)
			if files.PNG != "" {
				fmt.Fprintf(a.stdout, "chart   %s\n", files.PNG)
			}
			if promote {
				return a.promotionGate(rep, candidate, metric, margin, func(p string) (*eval.Report, error) {
					if err := e.LoadAdapter("incumbent", p); err != nil {
						return nil, err
					}
					o := opt
					o.Adapter, o.AdapterFile, o.Progress = "incumbent", p, nil
					return eval.Run(ctx, qs, o)
				})
			}
			return nil
		},
	}
	mf.register(cmd)
	cmd.Flags().Lookup("adapter").Usage = "LoRA adapter for the fine-tuned arms: a path or a name in $LLMRT_HOME/adapters"
	fl := cmd.Flags()
	fl.StringVar(&data, "data", "", "questions: JSONL of {\"question\", \"answer\", \"aliases\", \"context_ids\"}")
	fl.StringVarP(&collection, "collection", "c", "", "collection for the RAG arms")
	fl.StringVar(&judge, "judge", "", "model that judges correctness (its prompt is in the report)")
	fl.IntVarP(&topK, "top-k", "k", 4, "passages retrieved per question")
	fl.IntVar(&stages.MultiQuery, "multi-query", 0, "RAG arms: also search with this many rewrites of the question by the model (0: off)")
	fl.BoolVar(&stages.HyDE, "hyde", false, "RAG arms: also search with a hypothetical answer written by the model")
	fl.BoolVar(&stages.Rerank, "rerank", false, "RAG arms: rerank the candidates (with --rerank-model, else the model itself)")
	fl.StringVar(&rerankModel, "rerank-model", "", "reranking model (a GGUF with rank pooling; implies --rerank)")
	fl.BoolVar(&ablation, "ablation", false, "also run the RAG arm with each retrieval stage alone, none and all, and print the ablation table")
	fl.IntVar(&concurrency, "concurrency", 1, "questions answered in parallel (through the engine's batching)")
	fl.IntVar(&maxTokens, "max-tokens", 64, "longest answer")
	fl.IntVar(&future, "future-queries", 1000, "queries the fine-tuning cost is amortised over")
	fl.StringVar(&system, "system", "Answer the question briefly.", "system message of every arm")
	fl.StringVarP(&out, "out", "o", "", "report folder (default eval-TIMESTAMP)")
	fl.BoolVar(&promote, "promote", false, "promotion gate: promote --adapter NAME@N if it beats the promoted version of NAME by --margin")
	fl.Float64Var(&margin, "margin", 0.02, "with --promote: how much better (in --metric) the version must be")
	fl.StringVar(&metric, "metric", "f1", "with --promote: the score compared: f1, exact, contains or judged (needs --judge)")
	return cmd
}
