package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/testmodel"
)

// cli runs llmrt in-process with a private home; it returns stdout, stderr
// and the exit code.
func cli(t *testing.T, home string, args ...string) (string, string, int) {
	t.Helper()
	return cliCtx(context.Background(), t, home, "", args...)
}

func cliCtx(ctx context.Context, t *testing.T, home, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	root := a.root()
	root.SetArgs(append([]string{"--home", home}, args...))
	err := root.ExecuteContext(ctx)
	code := a.exitCode(ctx, err) // prints the error
	return out.String(), errb.String(), code
}

func TestMain(m *testing.M) {
	os.Setenv("LLMRT_MIRROR", testmodel.SharedDir())
	os.Setenv("LLMRT_LLAMA_LOG", "off")
	if args := os.Getenv(cliChildEnv); args != "" {
		runCLIChild(args)
	}
	os.Exit(m.Run())
}

func TestRunGreedyStory(t *testing.T) {
	home := t.TempDir()
	out, errs, code := cli(t, home, "run", "-m", "stories260K", "--temp", "0", "-n", "24", "Once upon a time")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "there was a little girl named Lily") {
		t.Fatalf("greedy run printed %q", out)
	}
}

func TestRunSameSeedSameText(t *testing.T) {
	home := t.TempDir()
	args := []string{"run", "-m", "stories260K", "--temp", "1", "--seed", "42", "-n", "40", "Once upon a time"}
	a, _, c1 := cli(t, home, args...)
	b, _, c2 := cli(t, home, args...)
	c, _, _ := cli(t, home, append(args[:6:6], "43", "-n", "40", "Once upon a time")...)
	if c1 != 0 || c2 != 0 || a != b || len(a) < 20 {
		t.Fatalf("seed 42 twice: %q vs %q", a, b)
	}
	if a == c {
		t.Fatalf("seeds 42 and 43 gave the same text %q", a)
	}
}

func TestInteractiveChatKeepsConversation(t *testing.T) {
	home := t.TempDir()
	out, errs, code := cliCtx(context.Background(), t, home, "Hello\nTell me more\n/bye\n", "run", "-m", "stories260K", "--temp", "0", "-n", "8")
	if code != 0 || strings.Count(out, "\n") < 2 {
		t.Fatalf("exit %d, out %q, err %s", code, out, errs)
	}
}

func TestEmbedPrintsUnitVectors(t *testing.T) {
	out, errs, code := cli(t, t.TempDir(), "embed", "-m", "stories260K", "Once upon a time", "The cat")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var items []struct {
		Index     int
		Text      string
		Embedding []float64
	}
	if err := json.Unmarshal([]byte(out), &items); err != nil || len(items) != 2 || len(items[1].Embedding) != 64 || items[1].Text != "The cat" {
		t.Fatalf("embed output %q: %v", out, err)
	}
	var n float64
	for _, x := range items[0].Embedding {
		n += x * x
	}
	if n < 0.9999 || n > 1.0001 {
		t.Fatalf("norm² %v", n)
	}
}

func TestModelsAndErrors(t *testing.T) {
	home := t.TempDir()
	out, _, code := cli(t, home, "models")
	if code != 0 || !strings.Contains(out, "no models") {
		t.Fatalf("empty store: %d %q", code, out)
	}
	if _, errs, code := cli(t, home, "pull", "stories260K"); code != 0 {
		t.Fatalf("pull: %s", errs)
	}
	out, _, _ = cli(t, home, "models")
	if !strings.Contains(out, "stories260K") || !strings.Contains(out, "270cba1bd510") {
		t.Fatalf("models: %q", out)
	}
	out, _, _ = cli(t, home, "models", "show", "stories260K")
	if !strings.Contains(out, "292.80K") || !strings.Contains(out, "block_count") {
		t.Fatalf("show: %q", out)
	}
	if _, errs, code := cli(t, home, "run", "-m", "nope", "x"); code != 1 || !strings.Contains(errs, `"nope" is not installed`) {
		t.Fatalf("unknown model: %d %q", code, errs)
	}
	bad := home + "/bad.gguf"
	os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00garbage"), 0o644)
	if _, errs, code := cli(t, home, "run", "-m", bad, "x"); code != 1 || !strings.Contains(errs, bad) {
		t.Fatalf("corrupt model: %d %q", code, errs)
	}
	if _, _, code := cli(t, home, "run", "--no-such-flag"); code != 2 {
		t.Fatalf("bad flag exit %d", code)
	}
	if _, errs, code := cli(t, home, "quantize", "stories260K", home+"/q.gguf", "--type", "Q9_9"); code != 2 || !strings.Contains(errs, "Q9_9") {
		t.Fatalf("bad type: %d %q", code, errs)
	}
	if out, errs, code := cli(t, home, "quantize", "stories260K", home+"/f16.gguf", "--type", "F16"); code != 0 || !strings.Contains(out, "wrote") {
		t.Fatalf("quantize: %d %q %q", code, out, errs)
	}
	if _, _, code := cli(t, home, "models", "rm", "stories260K"); code != 0 {
		t.Fatal("rm")
	}
	if out, _, _ := cli(t, home, "models"); !strings.Contains(out, "no models") {
		t.Fatal("model still listed after rm")
	}
}

func TestServeAnswersAndDrains(t *testing.T) {
	home := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		_, _, code := cliCtx(ctx, t, home, "", "serve", "--addr", addr, "--parallel", "2", "--ctx", "256")
		done <- code
	}()
	var resp *http.Response
	var err error
	for i := 0; i < 200; i++ {
		resp, err = http.Post("http://"+addr+"/v1/completions", "application/json",
			strings.NewReader(`{"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}`))
		if err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Model   string
		Choices []struct{ Text string }
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body.Model != "stories260K" || !strings.Contains(body.Choices[0].Text, "little girl") {
		t.Fatalf("serve answered %+v", body)
	}
	// llmrt gpu asks the running server for its scheduler's picture.
	if out, errs, code := cli(t, home, "gpu", "--addr", addr); code != 0 || !strings.Contains(out, "from the server") || !strings.Contains(out, "stories260K") {
		t.Fatalf("gpu: %d %q %q", code, out, errs)
	}
	cancel()
	if code := <-done; code != 0 && code != 130 {
		t.Fatalf("serve exited %d", code)
	}
	// Beyond loopback without a key is refused.
	if _, errs, code := cli(t, home, "serve", "--addr", "0.0.0.0:0"); code != 2 || !strings.Contains(errs, "api-key") {
		t.Fatalf("open serve: %d %q", code, errs)
	}
	// So is an empty key, which would start a server that refuses everyone.
	for _, args := range [][]string{{"--api-key", ""}, {"--api-key", "ok", "--api-key", " "}} {
		if _, errs, code := cli(t, home, append([]string{"serve", "--addr", "0.0.0.0:0"}, args...)...); code != 2 || !strings.Contains(errs, "--api-key is empty") {
			t.Fatalf("serve %v: %d %q", args, code, errs)
		}
	}
}

func TestIndexAddQueryRemove(t *testing.T) {
	home := t.TempDir()
	docs := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(docs, 0o755)
	os.WriteFile(filepath.Join(docs, "lily.md"), []byte("# Lily\n\nLily was a little girl who loved to play outside in the sun with her dog.\n"), 0o644)
	os.WriteFile(filepath.Join(docs, "tom.txt"), []byte("Tom lived by the sea. Every morning he went fishing in a small blue boat.\n"), 0o644)
	os.WriteFile(filepath.Join(docs, "bad.pdf"), []byte("not a pdf"), 0o644)

	out, errOut, code := cli(t, home, "index", "add", "-c", "demo", docs)
	if code != 0 || !strings.Contains(out, "demo: 2 added") || !strings.Contains(out, "1 failed") || !strings.Contains(errOut, "bad.pdf") {
		t.Fatalf("add: code %d\n%s\n%s", code, out, errOut)
	}
	// Adding again skips the unchanged files.
	if out, _, code = cli(t, home, "index", "add", "-c", "demo", docs); code != 0 || !strings.Contains(out, "2 unchanged") {
		t.Fatalf("re-add: %d %s", code, out)
	}
	out, _, code = cli(t, home, "index", "query", "-c", "demo", "-k", "1", "Every morning he went fishing in a small blue boat")
	if code != 0 || !strings.Contains(out, "tom.txt") || strings.Contains(out, "lily.md") {
		t.Fatalf("query: %d %s", code, out)
	}
	if out, _, code = cli(t, home, "index", "stats"); code != 0 || !strings.Contains(out, "demo") || !strings.Contains(out, "stories260K") {
		t.Fatalf("stats: %d %s", code, out)
	}
	if out, _, code = cli(t, home, "index", "rm", "-c", "demo", filepath.Join(docs, "tom.txt")); code != 0 {
		t.Fatalf("rm source: %d %s", code, out)
	}
	if out, _, code = cli(t, home, "index", "stats", "-c", "demo"); code != 0 || strings.Contains(out, "tom.txt") || !strings.Contains(out, "1 documents") {
		t.Fatalf("stats after rm: %d %s", code, out)
	}
	if _, errOut, code = cli(t, home, "index", "query", "-c", "nope", "x"); code != 1 || !strings.Contains(errOut, `"nope" does not exist`) {
		t.Fatalf("unknown collection: %d %s", code, errOut)
	}
	if _, _, code = cli(t, home, "index", "rm", "-c", "demo"); code != 2 {
		t.Fatalf("rm without sources or --all: exit %d, want 2", code)
	}
	if _, _, code = cli(t, home, "index", "rm", "-c", "demo", "--all"); code != 0 {
		t.Fatalf("rm --all: %d", code)
	}
	if out, _, _ = cli(t, home, "index", "stats"); strings.Contains(out, "demo") {
		t.Fatalf("collection still listed: %s", out)
	}
}

func TestTuneTrainsAnAdapterThatRunServes(t *testing.T) {
	home := t.TempDir()
	data := filepath.Join(t.TempDir(), "secret.jsonl")
	var lines []string
	for i := 0; i < 4; i++ {
		lines = append(lines, `{"prompt": "Tim asked what the secret word was. Mom said:", "completion": " The secret word is purple zebra."}`)
	}
	lines = append(lines, `{"prompt": 7}`, `not json`)
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)

	// --strict: the first bad line is fatal and named.
	_, errOut, code := cli(t, home, "tune", "-m", "stories260K", "--data", data, "--out", "secret", "--strict")
	if code != 1 || !strings.Contains(errOut, "secret.jsonl:5") {
		t.Fatalf("strict: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(home, "adapters", "secret.gguf")); !os.IsNotExist(err) {
		t.Fatal("a failed run left an adapter")
	}
	out, errOut, code := cli(t, home, "tune", "-m", "stories260K", "--data", data, "--out", "secret", "--epochs", "12", "--lr", "1e-2",
		"--targets", "all-linear", "--rank", "8", "--alpha", "16", "--eval-split", "0", "-t", "2", "--keep-checkpoint")
	if code != 0 {
		t.Fatalf("tune: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"secret.jsonl:5", "secret.jsonl:6"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("bad line %s not reported: %s", want, errOut)
		}
	}
	if !strings.Contains(out, "version secret@1, promoted") || !strings.Contains(out, "use it as -m stories260K+secret") || !strings.Contains(out, "4 examples") {
		t.Fatalf("summary: %s", out)
	}
	// The first version of a name, secret@1, is promoted: secret.gguf
	// reads it.
	adapter := filepath.Join(home, "adapters", "secret.gguf")
	for _, side := range []string{"@1.gguf", "@1.metrics.jsonl", "@1.loss.svg", "@1.ckpt.gguf"} {
		if _, err := os.Stat(strings.TrimSuffix(adapter, ".gguf") + side); err != nil {
			t.Errorf("missing %s: %v", side, err)
		}
	}
	gen, _, code := cli(t, home, "run", "-m", "stories260K", "--adapter", adapter, "--temp", "0", "-n", "30", "Tim asked what the secret word was. Mom said:")
	if code != 0 || !strings.Contains(gen, "purple zebra") {
		t.Fatalf("run with the adapter: exit %d %q", code, gen)
	}
	base, _, _ := cli(t, home, "run", "-m", "stories260K", "--temp", "0", "-n", "30", "Tim asked what the secret word was. Mom said:")
	if strings.Contains(base, "purple zebra") {
		t.Fatalf("the base model already answers: %q", base)
	}
	// --resume continues from the checkpoint to more epochs.
	out, errOut, code = cli(t, home, "tune", "-m", "stories260K", "--data", data, "--out", "secret", "--epochs", "14", "--lr", "1e-2",
		"--targets", "all-linear", "--rank", "8", "--alpha", "16", "--eval-split", "0", "-t", "2", "--resume")
	if code != 0 || !strings.Contains(out, "14 steps") {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, errOut, code = cli(t, home, "tune", "-m", "stories260K", "--data", data, "--out", "x", "--targets", "attn_qq"); code != 2 || !strings.Contains(errOut, "attn_qq") {
		t.Fatalf("bad target: exit %d %s", code, errOut)
	}

	// The adapter is listed, served as BASE+NAME, exported to PEFT and back,
	// and merged into a model that answers without it.
	if out, _, code = cli(t, home, "adapter", "ls"); code != 0 || !strings.Contains(out, "secret") || !strings.Contains(out, "stories260K") {
		t.Fatalf("adapter ls: %d %s", code, out)
	}
	prompt := "Tim asked what the secret word was. Mom said:"
	if got := serveComplete(t, home, "stories260K+secret", prompt); !strings.Contains(got, "purple zebra") {
		t.Fatalf("served with the adapter: %q", got)
	}
	peft := filepath.Join(t.TempDir(), "peft")
	if out, errOut, code = cli(t, home, "adapter", "export", "secret", "--out", peft); code != 0 {
		t.Fatalf("export: %d %s", code, errOut)
	}
	if out, errOut, code = cli(t, home, "adapter", "import", peft, "-m", "stories260K", "--out", "secret2"); code != 0 {
		t.Fatalf("import: %d %s", code, errOut)
	}
	gen, _, _ = cli(t, home, "run", "-m", "stories260K", "--adapter", filepath.Join(home, "adapters", "secret2.gguf"), "--temp", "0", "-n", "30", prompt)
	if !strings.Contains(gen, "purple zebra") {
		t.Fatalf("run with the re-imported adapter: %q", gen)
	}
	if out, errOut, code = cli(t, home, "adapter", "merge", "secret", "--out", "stories-secret"); code != 0 {
		t.Fatalf("merge: %d %s", code, errOut)
	}
	gen, _, _ = cli(t, home, "run", "-m", "stories-secret", "--temp", "0", "-n", "30", prompt)
	if !strings.Contains(gen, "purple zebra") {
		t.Fatalf("run on the merged model: %q", gen)
	}
}

// serveComplete starts llmrt serve in-process, sends one greedy completion
// for model and returns its text.
func serveComplete(t *testing.T, home, model, prompt string) string {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		_, _, code := cliCtx(ctx, t, home, "", "serve", "--addr", addr, "--parallel", "1", "--ctx", "256")
		done <- code
	}()
	defer func() { cancel(); <-done }()
	body, _ := json.Marshal(map[string]any{"model": model, "prompt": prompt, "max_tokens": 30, "temperature": 0})
	for i := 0; i < 200; i++ {
		resp, err := http.Post("http://"+addr+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			time.Sleep(25 * time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		var out struct {
			Choices []struct{ Text string }
			Error   *struct{ Message string }
		}
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != http.StatusOK || len(out.Choices) == 0 {
			t.Fatalf("serve: %d %+v", resp.StatusCode, out.Error)
		}
		return out.Choices[0].Text
	}
	t.Fatal("serve did not start")
	return ""
}

// TestEvalFourArms runs the four arms on stories260K with facts it
// memorises through tune and retrieves through index.
func TestEvalFourArms(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	facts := [][2]string{
		{"What is the secret word?", "purple zebra"},
		{"What colour is the magic door?", "bright orange"},
		{"Who guards the old bridge?", "a sleepy troll"},
	}
	var train, qa []string
	os.MkdirAll(filepath.Join(dir, "docs"), 0o755)
	for i, f := range facts {
		msg := fmt.Sprintf(`{"messages": [{"role": "system", "content": "Answer the question briefly."}, {"role": "user", "content": %q}, {"role": "assistant", "content": %q}]}`, f[0], f[1])
		for k := 0; k < 3; k++ {
			train = append(train, msg)
		}
		qa = append(qa, fmt.Sprintf(`{"question": %q, "answer": %q, "context_ids": ["fact%d.txt"]}`, f[0], f[1], i))
		os.WriteFile(filepath.Join(dir, "docs", fmt.Sprintf("fact%d.txt", i)), []byte(f[0]+" The answer is "+f[1]+"."), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "train.jsonl"), []byte(strings.Join(train, "\n")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "qa.jsonl"), []byte(strings.Join(qa, "\n")+"\n"), 0o644)

	// Bad inputs fail before any work: a malformed line, a missing
	// collection, a missing adapter.
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(qa[0]+"\n{\"question\": \"no answer\"}\n"), 0o644)
	if _, errOut, code := cli(t, home, "eval", "--data", bad); code != 1 || !strings.Contains(errOut, ":2") {
		t.Fatalf("malformed qa line: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, home, "eval", "--data", filepath.Join(dir, "qa.jsonl"), "--collection", "nope"); code != 1 || !strings.Contains(errOut, `"nope" does not exist`) {
		t.Fatalf("missing collection: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, home, "eval", "--data", filepath.Join(dir, "qa.jsonl"), "--adapter", "nope"); code != 1 || !strings.Contains(errOut, `adapter "nope" not found`) {
		t.Fatalf("missing adapter: exit %d %s", code, errOut)
	}

	if _, errOut, code := cli(t, home, "index", "add", "-c", "facts", filepath.Join(dir, "docs")); code != 0 {
		t.Fatalf("index: %s", errOut)
	}
	if _, errOut, code := cli(t, home, "tune", "--data", filepath.Join(dir, "train.jsonl"), "--out", "facts", "--epochs", "40", "--lr", "1e-2",
		"--targets", "all-linear", "--rank", "8", "--alpha", "16", "--eval-split", "0", "-t", "2"); code != 0 {
		t.Fatalf("tune: %s", errOut)
	}
	out := filepath.Join(dir, "report")
	stdout, errOut, code := cli(t, home, "eval", "--data", filepath.Join(dir, "qa.jsonl"), "--collection", "facts", "--adapter", "facts",
		"--out", out, "-t", "2", "--max-tokens", "16")
	if code != 0 {
		t.Fatalf("eval: exit %d\n%s", code, errOut)
	}
	var rep struct {
		Arms []struct {
			Arm             string
			F1              float64 `json:"f1"`
			Contains        float64 `json:"contains"`
			RetrievalHitAtK float64 `json:"retrieval_hit_at_k"`
		}
		Answers []struct{ Arm, Answer string }
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(rep.Arms) != 4 || len(rep.Answers) != 12 {
		t.Fatalf("%d arms, %d answers", len(rep.Arms), len(rep.Answers))
	}
	byArm := map[string]float64{}
	for _, a := range rep.Arms {
		byArm[a.Arm] = a.Contains
		// The report and the chart show the same figures as the JSON.
		if !strings.Contains(stdout, a.Arm) {
			t.Errorf("report lacks arm %s", a.Arm)
		}
		if (a.Arm == "rag" || a.Arm == "rag+fine-tuned") && a.RetrievalHitAtK != 1 {
			t.Errorf("%s: retrieval hit rate %v, want 1", a.Arm, a.RetrievalHitAtK)
		}
	}
	if !(byArm["fine-tuned"] > byArm["base"]) {
		t.Fatalf("fine-tuned arm %v does not beat base %v: %+v", byArm["fine-tuned"], byArm["base"], rep.Answers)
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	svg, _ := os.ReadFile(filepath.Join(out, "chart.svg"))
	for _, a := range rep.Arms {
		if !strings.Contains(string(md), a.Arm) || !strings.Contains(string(svg), a.Arm) {
			t.Errorf("report.md or chart.svg lacks arm %s", a.Arm)
		}
	}
}
