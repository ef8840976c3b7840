package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/sched"
)

// indexFlags are shared by the index subcommands.
type indexFlags struct {
	modelFlags
	collection string
}

func (f *indexFlags) register(cmd *cobra.Command, needCollection bool) {
	f.modelFlags.registerModel(cmd, "embedding model of a new collection (env LLMRT_EMBED_MODEL; default "+defaultModel+"); an existing collection uses the model it was built with")
	cmd.Flags().StringVarP(&f.collection, "collection", "c", "", "collection name")
	if needCollection {
		cmd.MarkFlagRequired("collection")
	}
}

// embedModel is -m, else the model an existing collection was built
// with, else LLMRT_EMBED_MODEL, else the default model (the name a new
// collection records).
func (f *indexFlags) embedModel(dir string) string {
	if f.model != "" {
		return f.model
	}
	if f.collection != "" {
		if s, err := rag.OpenStore(dir, rag.StoreOptions{}); err == nil {
			m, err := s.EmbeddingModel(f.collection)
			s.Close()
			if err == nil && m != "" {
				return m
			}
		}
	}
	if m := os.Getenv("LLMRT_EMBED_MODEL"); m != "" {
		return m
	}
	if m := os.Getenv("LLMRT_MODEL"); m != "" {
		return m
	}
	return defaultModel
}

// openCollections opens the collection store with the embedding model
// loaded (embed=false opens it for listing, stats and deleting only).
// readOnly opens collections without their lock, for reading beside a
// writer such as llmrt serve.
func (a *app) openCollections(cmd *cobra.Command, f *indexFlags, embed, readOnly bool) (*rag.Store, func(), error) {
	dir := filepath.Join(a.home, "collections")
	if !embed {
		s, err := rag.OpenStore(dir, rag.StoreOptions{ReadOnly: readOnly, Logger: a.log})
		return s, func() { s.Close() }, err
	}
	name := f.embedModel(dir)
	f.model = name
	e, _, err := a.openEngine(cmd.Context(), &f.modelFlags, 1)
	if err != nil {
		return nil, nil, err
	}
	s, err := rag.OpenStore(dir, rag.StoreOptions{Embedder: rag.EngineEmbedder{E: e, Model: name}, ReadOnly: readOnly, Logger: a.log})
	if err != nil {
		e.Close()
		return nil, nil, err
	}
	return s, func() { s.Close(); e.Close() }, nil
}

func collectionErr(name string, err error) error {
	switch {
	case errors.Is(err, rag.ErrNotFound):
		return fmt.Errorf("collection %q does not exist (create it with llmrt index add --collection %s PATH)", name, name)
	case errors.Is(err, rag.ErrLocked):
		return fmt.Errorf("collection %q is open in another process (a running llmrt serve?): use its /v1/collections API instead", name)
	case errors.Is(err, rag.ErrModelMismatch):
		return fmt.Errorf("collection %q: %w; leave out -m to use the model it was built with", name, err)
	}
	return err
}

func (a *app) indexCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "index",
		Short: "Manage document collections for retrieval (RAG)",
		Long: `index ingests documents (.txt, .md, .html, .pdf; PDF needs pdftotext from
poppler-utils) into collections under $LLMRT_HOME/collections, queries them,
and removes documents or whole collections. llmrt serve answers from the
same collections (chat "rag" extension, /v1/collections).`,
	}
	cmd.AddCommand(a.indexAddCmd(), a.indexQueryCmd(), a.indexRmCmd(), a.indexStatsCmd())
	return cmd
}

func (a *app) indexAddCmd() *cobra.Command {
	var f indexFlags
	var size, overlap, batch int
	var metric string
	var prune bool
	cmd := &cobra.Command{
		Use:   "add --collection NAME [flags] PATH...",
		Short: "Ingest files or folders into a collection (created if missing)",
		Long: `add chunks the files (folders are walked), embeds the chunks and stores them.
A file whose content did not change since it was last added is skipped; a
changed file has its chunks replaced. The collection is created on first use
with --metric, --chunk-size and --chunk-overlap.`,
		Example: `  llmrt index add --collection handbook ./docs
  llmrt index add -c handbook --chunk-size 256 --chunk-overlap 32 manual.pdf`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rag.CheckName(f.collection); err != nil {
				return usageError{err}
			}
			for _, p := range args {
				if _, err := os.Stat(p); err != nil {
					return usageError{err}
				}
			}
			s, closeAll, err := a.openCollections(cmd, &f, true, false)
			if err != nil {
				return err
			}
			defer closeAll()
			ctx := cmd.Context()
			c, err := s.Get(ctx, f.collection)
			if errors.Is(err, rag.ErrNotFound) {
				c, err = s.Create(ctx, f.collection, rag.CreateOptions{Metric: metric, Chunking: rag.ChunkOptions{Size: size, Overlap: overlap}})
				if err == nil {
					a.say(fmt.Sprintf("created collection %s (embedding model %s, %s similarity)", f.collection, f.model, c.Manifest().Metric),
						"created collection", "name", f.collection, "model", f.model, "metric", c.Manifest().Metric)
				}
			}
			if err != nil {
				return collectionErr(f.collection, err)
			}
			var total rag.AddReport
			for _, p := range args {
				bar := newProgress(a.stderr, a.log, "ingest "+filepath.Base(p), "chunks", 0)
				rep, err := c.AddPath(ctx, p, rag.AddOptions{BatchSize: batch, Prune: prune,
					Progress: func(done, n int) { bar.Set(int64(done), int64(n)) },
					Stored:   func(si rag.SourceInfo) { a.log.Debug("stored", "source", si.Path, "chunks", si.Chunks) }})
				if err != nil {
					bar.Abort()
					return fmt.Errorf("ingest %s: %w", p, err)
				}
				bar.Finish()
				for _, u := range rep.Unchanged {
					a.log.Debug("unchanged", "source", u) // already stored as it is: as durable as a "stored" line
				}
				total.Merge(rep)
			}
			fmt.Fprintf(a.stdout, "%s: %d added, %d updated, %d unchanged, %d removed, %d failed; %d chunks (%d tokens) stored\n",
				f.collection, len(total.Added), len(total.Updated), len(total.Unchanged), len(total.Removed), len(total.Failed), total.Chunks, total.Tokens)
			for _, fe := range total.Failed {
				fmt.Fprintf(a.stderr, "failed: %s: %v\n", fe.Path, fe.Err)
			}
			if len(total.Failed) > 0 && len(total.Added)+len(total.Updated)+len(total.Unchanged) == 0 {
				return fmt.Errorf("no file of %s could be ingested", strings.Join(args, ", "))
			}
			return nil
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.IntVar(&size, "chunk-size", 0, "tokens per chunk for a new collection (default 256, at most the model's limit)")
	fl.IntVar(&overlap, "chunk-overlap", 0, "tokens of overlap between neighbouring chunks (default 32)")
	fl.StringVar(&metric, "metric", "cosine", "similarity for a new collection: cosine, dot or l2")
	fl.IntVar(&batch, "batch", 32, "chunks per embedding call")
	fl.BoolVar(&prune, "prune", false, "remove sources under the added folders whose files are gone")
	return cmd
}

func (a *app) indexQueryCmd() *cobra.Command {
	var f indexFlags
	var k int
	var mode string
	var mmr float64
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "query --collection NAME [flags] QUERY",
		Short:   "Retrieve the passages that best answer a query",
		Example: `  llmrt index query -c handbook "how do I reset the device?"`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := rag.ParseMode(mode)
			if err != nil {
				return usageError{err}
			}
			if k < 1 || k > 100 {
				return usageError{fmt.Errorf("-k must be between 1 and 100, got %d", k)}
			}
			s, closeAll, err := a.openCollections(cmd, &f, true, true)
			if err != nil {
				return err
			}
			defer closeAll()
			c, err := s.Get(cmd.Context(), f.collection)
			if err != nil {
				return collectionErr(f.collection, err)
			}
			hits, err := c.Search(cmd.Context(), strings.Join(args, " "), rag.SearchOptions{K: k, Mode: m, MMR: mmr})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(hits)
			}
			for i, h := range hits {
				fmt.Fprintf(a.stdout, "[%d] %s  %s  (%s, bytes %d-%d)\n", i+1, hitScores(h, c.Manifest().Metric), h.Chunk.Title, h.Chunk.Source, h.Chunk.Start, h.Chunk.End)
				fmt.Fprintf(a.stdout, "    %s\n\n", strings.ReplaceAll(strings.TrimSpace(h.Chunk.Text), "\n", "\n    "))
			}
			if len(hits) == 0 {
				fmt.Fprintln(a.stderr, "no passages (is the collection empty?)")
			}
			return nil
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.IntVarP(&k, "top-k", "k", 4, "passages to return")
	fl.StringVar(&mode, "mode", "hybrid", "ranking: vector, hybrid (vector + BM25 fused) or keyword")
	fl.Float64Var(&mmr, "mmr", 0, "maximal marginal relevance in (0, 1] to diversify passages (0: off)")
	fl.BoolVar(&asJSON, "json", false, "print the hits as JSON")
	return cmd
}

// hitScores labels a hit's score with its kind, and in hybrid mode adds the
// scores it was fused from: "rrf 0.0297  cosine 0.891  bm25 4.12".
func hitScores(h rag.Hit, metric string) string {
	s := fmt.Sprintf("%s %.3f", h.ScoreKind, h.Score)
	if h.ScoreKind != "rrf" {
		return s
	}
	s = fmt.Sprintf("rrf %.4f", h.Score)
	for _, part := range []struct {
		name string
		v    *float32
	}{{metric, h.VectorScore}, {"bm25", h.BM25Score}} {
		if part.v != nil {
			s += fmt.Sprintf("  %s %.3f", part.name, *part.v)
		} else {
			s += fmt.Sprintf("  %s –", part.name)
		}
	}
	return s
}

func (a *app) indexRmCmd() *cobra.Command {
	var f indexFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "rm --collection NAME (SOURCE... | --all)",
		Short: "Remove documents from a collection, or the whole collection",
		Example: `  llmrt index rm -c handbook /docs/old.md
  llmrt index rm -c handbook --all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usageError{errors.New("name the sources to remove, or pass --all to delete the collection")}
			}
			if all {
				s, closeAll, err := a.openCollections(cmd, &f, false, false)
				if err != nil {
					return err
				}
				defer closeAll()
				if err := s.Delete(f.collection); err != nil {
					return collectionErr(f.collection, err)
				}
				fmt.Fprintf(a.stdout, "deleted collection %s\n", f.collection)
				return nil
			}
			s, closeAll, err := a.openCollections(cmd, &f, true, false)
			if err != nil {
				return err
			}
			defer closeAll()
			c, err := s.Get(cmd.Context(), f.collection)
			if err != nil {
				return collectionErr(f.collection, err)
			}
			for _, src := range args {
				p := src
				if abs, err := filepath.Abs(src); err == nil && c.Chunks(p) == nil {
					p = abs
				}
				if err := c.RemoveSource(cmd.Context(), p); err != nil {
					if errors.Is(err, rag.ErrNoSource) {
						return fmt.Errorf("%s is not in collection %s", src, f.collection)
					}
					return err
				}
				fmt.Fprintf(a.stdout, "removed %s\n", p)
			}
			return nil
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVar(&all, "all", false, "delete the whole collection")
	return cmd
}

func (a *app) indexStatsCmd() *cobra.Command {
	var f indexFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats [--collection NAME]",
		Short: "List collections, or show one with its documents",
		RunE: func(cmd *cobra.Command, args []string) error {
			s, closeAll, err := a.openCollections(cmd, &f, false, true)
			if err != nil {
				return err
			}
			defer closeAll()
			if f.collection == "" {
				ms, err := s.List()
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(a.stdout).Encode(ms)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tMODEL\tDIM\tMETRIC\tCREATED")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", m.Name, m.Model, m.Dim, m.Metric, m.Created.Format("2006-01-02 15:04"))
				}
				return tw.Flush()
			}
			c, err := s.Get(cmd.Context(), f.collection)
			if err != nil {
				return collectionErr(f.collection, err)
			}
			st, err := c.Stats()
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(map[string]any{"stats": st, "sources": c.Sources()})
			}
			fmt.Fprintf(a.stdout, "collection %s: model %s, %d dims, %s; %d documents, %d chunks, %d tokens; index %s in memory, %s on disk\n",
				st.Name, st.Model, st.Dim, st.Metric, st.Documents, st.Chunks, st.Tokens, sched.FormatBytes(st.IndexBytes), sched.FormatBytes(st.DiskBytes))
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SOURCE\tFORMAT\tCHUNKS\tTOKENS\tADDED")
			for _, src := range c.Sources() {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", src.Path, src.Format, src.Chunks, src.Tokens, src.Added.Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	f.register(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
