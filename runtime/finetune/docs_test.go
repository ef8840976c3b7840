package finetune

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag"
)

// story writes a document of at least n tokens of stories260K's
// tokenizer and returns its path and its token count (without BOS/EOS).
func story(t *testing.T, dir string, n int) (string, int) {
	t.Helper()
	m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, "stories260K.gguf"), kernels.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	names := []string{"Lily", "Tom", "Max", "Sue", "Ben", "Mia"}
	things := []string{"a red ball", "a big box", "a small boat", "a green kite", "an old tree", "a shiny stone"}
	places := []string{"in the park", "by the sea", "at home", "in the garden", "near the school", "under the bridge"}
	var sb strings.Builder
	sb.WriteString("# The long story\n\n")
	for i := 0; ; i++ {
		fmt.Fprintf(&sb, "%s found %s %s and showed it to %s. ", names[i%6], things[(i/6)%6], places[(i/36)%6], names[(i+1)%6])
		if i%5 == 4 {
			sb.WriteString("\n\n")
		}
		if i%50 == 49 {
			toks, err := m.Tokenize(sb.String(), false, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(toks) >= n {
				p := filepath.Join(dir, "story.md")
				os.WriteFile(p, []byte(sb.String()), 0o644)
				return p, len(toks)
			}
		}
	}
}

// A 20,000-token document trains on all of its tokens, over windows of
// --ctx tokens (with or without shared context between them), where it
// used to be truncated to its first --ctx tokens.
func TestTrainOnAWholeDocument(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	doc, n := story(t, dir, 20000)
	for _, stride := range []int{0, 64} {
		var loaded dataset.Stats
		sum, err := Train(ctx, Spec{BasePath: testmodel.Shared(t, "stories260K.gguf"), Data: doc, Out: filepath.Join(dir, fmt.Sprintf("a%d.gguf", stride)),
			Ctx: 512, Stride: stride, Epochs: 1, EvalSplit: 0, Rank: 2, Targets: []string{"attn_q"}, Threads: 1},
			Hooks{Loaded: func(s dataset.Stats, _ int) { loaded = s }})
		if err != nil {
			t.Fatal(err)
		}
		// Every token of the text and the EOS after it is predicted once
		// (BOS starts the document and is never a target).
		if loaded.TrainTokens != n+1 || loaded.Truncated != 0 || loaded.AvailableTokens != n+2 || loaded.UsedTokens != n+2 {
			t.Fatalf("stride %d: %d text tokens, stats %+v", stride, n, loaded)
		}
		step := 512 - max(stride, 1)
		if want := (n+2-512+step-1)/step + 1; loaded.Windows != want || loaded.Examples != want {
			t.Fatalf("stride %d: %d windows, want %d", stride, loaded.Windows, want)
		}
		if sum.UsedTokens != n+2 || sum.AvailableTokens != n+2 || sum.Steps < loaded.Rows {
			t.Fatalf("stride %d: summary %+v", stride, sum)
		}
	}
}

// Documents are read by the parsers of ingestion: Markdown, HTML and PDF
// (through pdftotext) from a folder, each whole.
func TestDocumentsReadAsIngestionReadsThem(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 1, CtxPerSeq: 256, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	handbook, _ := filepath.Abs("../../examples/aurora/handbook")
	tok := engineTokenizer{e}
	ex, warns, err := dataset.Load(handbook, tok, dataset.Options{Window: 128, Documents: ragDocuments{ctx}})
	if err != nil || len(warns) > 0 {
		t.Fatalf("load: %v %v", err, warns)
	}
	avail := map[string]int{}
	for _, x := range ex {
		src := x.Source[:strings.LastIndexByte(x.Source, '#')]
		avail[filepath.Base(src)] += len(x.Tokens) - x.Overlap
		if len(x.Tokens) > 128 {
			t.Fatalf("%s: window of %d tokens", x.Source, len(x.Tokens))
		}
	}
	for _, name := range []string{"01-getting-started.md", "06-error-codes.html", "07-maintenance.pdf"} {
		doc, err := rag.ReadDocument(ctx, filepath.Join(handbook, name))
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := e.Tokenize(doc.Text, true, false)
		if avail[name] != len(toks)+1 {
			t.Errorf("%s: %d tokens in windows, the parsed document has %d (+EOS)", name, avail[name], len(toks))
		}
	}
	if strings.Contains(fmt.Sprint(ex[0].Tokens), "<html") {
		t.Fatal("markup in the training text")
	}
}

// tune --collection trains on a collection's documents, rebuilt from its
// chunks: the same words as the files, in order.
func TestTrainOnACollection(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	doc, n := story(t, dir, 3000)
	e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 1, CtxPerSeq: 512, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	colls := filepath.Join(dir, "collections")
	st, err := rag.OpenStore(colls, rag.StoreOptions{Embedder: rag.EngineEmbedder{E: e, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Create(ctx, "stories", rag.CreateOptions{Chunking: rag.ChunkOptions{Size: 128, Overlap: 24}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPath(ctx, doc, rag.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	texts := c.Texts()
	st.Close()
	b, _ := os.ReadFile(doc)
	if len(texts) != 1 || !slices.Equal(strings.Fields(texts[0].Text), strings.Fields(strings.TrimPrefix(string(b), "# "))) {
		t.Fatalf("rebuilt text differs from the document:\n%.300q\n%.300q", texts[0].Text, b)
	}
	var loaded dataset.Stats
	sum, err := Train(ctx, Spec{BasePath: testmodel.Shared(t, "stories260K.gguf"), Collection: "stories", CollectionsDir: colls,
		Out: filepath.Join(dir, "c.gguf"), Ctx: 256, Epochs: 1, EvalSplit: 0, Rank: 2, Targets: []string{"attn_q"}, Threads: 1},
		Hooks{Loaded: func(s dataset.Stats, _ int) { loaded = s }})
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Truncated != 0 || loaded.Windows < 2 || loaded.TrainTokens < n*9/10 || sum.Steps == 0 {
		t.Fatalf("%d document tokens, stats %+v", n, loaded)
	}
	a, err := lora.ReadAdapter(filepath.Join(dir, "c.gguf"))
	if err != nil || a.Meta["llmrt.train.data"] != "collection:stories" {
		t.Fatalf("adapter metadata %v (%v)", a.Meta, err)
	}
}
