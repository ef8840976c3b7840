package lora

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
)

// modelTok gives the dataset loader a model's tokenizer (prompt-form
// preference lines need no chat template).
type modelTok struct{ m *kernels.Model }

func (t modelTok) RenderChat([]dataset.Message, bool) (string, error) {
	return "", errors.New("no chat template")
}
func (t modelTok) Tokenize(s string, addSpecial, parseSpecial bool) ([]int32, error) {
	return t.m.Tokenize(s, addSpecial, parseSpecial)
}
func (t modelTok) EOS() int32 { return t.m.Info().EOS }

// TestDPOPrefersChosenAnswers trains an adapter with DPO on stories260K:
// for each prompt the rejected answer is what the base model says
// greedily, the chosen one another sentence. The chosen answers'
// log-probability margin over the rejected ones must rise, the metrics
// must record loss, reward margin and accuracy per step, and greedy
// generation with the adapter must move to the chosen answers.
func TestDPOPrefersChosenAnswers(t *testing.T) {
	ctx := context.Background()
	path := testmodel.Shared(t, "stories260K.gguf")
	e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: 1, CtxPerSeq: 128, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	greedy := func(prompt string, ads []engine.AdapterRef) string {
		toks, err := e.Tokenize(prompt, true, false)
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: 6, Adapters: ads})
		if err != nil {
			t.Fatal(err)
		}
		return r.Text
	}
	prompts := []struct{ prompt, chosen string }{
		{"Once upon a time, there was a little", " frog who liked to sing."},
		{"The sun was shining and the birds", " sang a song in the tree."},
		{"Lily went to the park with her", " big blue kite."},
		{"One day, Tom found a", " shiny key under a rock."},
	}
	var lines []string
	base := make([]string, len(prompts))
	for i, p := range prompts {
		base[i] = greedy(p.prompt, nil)
		if strings.HasPrefix(base[i], p.chosen[:6]) {
			t.Fatalf("the base model already says %q after %q", base[i], p.prompt)
		}
		b, _ := json.Marshal(map[string]string{"prompt": p.prompt, "chosen": p.chosen, "rejected": base[i]})
		lines = append(lines, string(b))
	}
	dir := t.TempDir()
	prefs := filepath.Join(dir, "prefs.jsonl")
	if err := os.WriteFile(prefs, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	m := e.Model()
	pairs, warns, err := dataset.LoadPairs(prefs, modelTok{m}, dataset.Options{Strict: true})
	if err != nil || len(warns) > 0 || len(pairs) != len(prompts) {
		t.Fatalf("%d pairs, %v, %v", len(pairs), warns, err)
	}
	var st dataset.Stats
	rows := dataset.PackPairs(pairs, 256, &st)
	// train runs DPO (sft 0) or DPO with the chosen answers' own loss
	// (RPO) from a fresh adapter and returns the mean log-probability
	// margin of the chosen over the rejected answers before and after.
	train := func(sft float64, epochs int, out string) (before, after float64, sum Summary) {
		net, err := kernels.NewNet(m, kernels.NetParams{Threads: 1, Rank: 8, Alpha: 16, Seed: 2,
			Targets: []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}})
		if err != nil {
			t.Fatal(err)
		}
		defer net.Close()
		nb, err := NewNetBackend(net, "llama", 16, kernels.DefaultAdam)
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewDPOBackend(nb, 0.1, sft)
		if err != nil {
			t.Fatal(err)
		}
		margin := func() float64 {
			var s float64
			for _, r := range rows {
				lp, err := net.SeqLogProbs(r.Tokens, r.Pos, r.Seg, r.Labels, true)
				if err != nil {
					t.Fatal(err)
				}
				for k := 0; k+1 < len(lp); k += 2 {
					s += float64(lp[k] - lp[k+1])
				}
			}
			return s / float64(len(prompts))
		}
		before = margin()
		sum, err = Run(ctx, b, Data{Train: rows, Stats: st}, Config{Epochs: epochs, LR: 5e-3, Schedule: Constant, Batch: 1, GradAccum: 1, Seed: 1, Out: out}, nil)
		if err != nil {
			t.Fatal(err)
		}
		after = margin()
		t.Logf("sft weight %g: log-probability margin chosen - rejected %.2f -> %.2f nats; final %+v", sft, before, after, *sum.FinalPreference)
		if !(after > before+5) {
			t.Fatalf("sft weight %g: margin %.2f -> %.2f: DPO did not move the chosen answers up against the rejected ones", sft, before, after)
		}
		return before, after, sum
	}
	// Plain DPO raises the margin; on this tiny model it pushes the
	// rejected answers down until greedy decoding wanders off to text in
	// neither answer, so the greedy check trains with the chosen answers'
	// own loss at weight 0.5 (RPO).
	train(0, 10, filepath.Join(dir, "plain.gguf"))
	out := filepath.Join(dir, "prefs.gguf")
	_, _, sum := train(0.5, 30, out)
	if sum.FinalPreference == nil || sum.FinalPreference.Accuracy != 1 || !(sum.FinalPreference.Margin > 0) {
		t.Fatalf("final preference statistics %+v", sum.FinalPreference)
	}

	// Metrics: loss, reward margin and accuracy on every step; the first
	// step's policy is the reference (B starts at zero), so its rewards
	// are zero; the loss falls.
	f, err := os.Open(MetricsPath(out))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ml []MetricLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l MetricLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if l.RewardMargin == nil || l.RewardAccuracy == nil || l.Pairs != len(prompts) {
			t.Fatalf("metrics line without preference statistics: %s", sc.Text())
		}
		ml = append(ml, l)
	}
	if len(ml) != 30 || math.Abs(*ml[0].RewardMargin) > 1e-4 || *ml[0].RewardAccuracy != 0 || !(ml[len(ml)-1].Loss < ml[0].Loss/3) {
		t.Fatalf("%d metric lines; first margin %g, loss %.4f -> %.4f", len(ml), *ml[0].RewardMargin, ml[0].Loss, ml[len(ml)-1].Loss)
	}
	svg, err := os.ReadFile(LossCurvePath(out))
	if err != nil || !strings.Contains(string(svg), "reward margin") || !strings.Contains(string(svg), "reward accuracy") {
		t.Fatalf("loss curve without the preference panel: %v", err)
	}

	// Greedy generation moves to the chosen answers.
	if err := e.LoadAdapter("prefs", out); err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		got := greedy(p.prompt, []engine.AdapterRef{{Name: "prefs", Scale: 1}})
		t.Logf("%q: base %q, with the DPO adapter %q", p.prompt, base[i], got)
		if len(strings.TrimSpace(got)) < 3 || !strings.HasPrefix(p.chosen, got) {
			t.Errorf("%q: greedy output %q did not move to the chosen %q", p.prompt, got, p.chosen)
		}
	}
}
