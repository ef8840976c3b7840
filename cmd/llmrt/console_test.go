package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The web console (runtime/console) driven by headless Chromium against a
// real `llmrt serve` with stories260K. Screenshots of every page at 1280
// and 390 pixels go to console-screenshots/ (gitignored) at the top of
// the repository.

// chromium finds the browser: LLMRT_CHROMIUM, else Debian's chromium. It
// skips the test when there is none, except in CI, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LLMRT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "the console's browser tests need Chromium: apt-get install chromium (.ci/run installs it), or set LLMRT_CHROMIUM"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startServe runs `llmrt serve` in-process on a free port and waits until
// it answers /health.
func startServe(t *testing.T, home string, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		_, errs, code := cliCtx(ctx, t, home, "", append([]string{"serve", "--addr", addr, "--grace", "2s"}, args...)...)
		if code != 0 && code != 130 {
			t.Logf("serve exited %d: %s", code, errs)
		}
		done <- code
	}()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; i < 400; i++ {
		if resp, err := http.Get("http://" + addr + "/health"); err == nil {
			resp.Body.Close()
			return "http://" + addr
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("llmrt serve did not start")
	return ""
}

// browser is one Chromium tab and what it logged to its console.
type browser struct {
	t     *testing.T
	ctx   context.Context
	start time.Time
	mu    sync.Mutex
	logs  []chromedp.ConsoleMessage
	// allowed counts the messages expected from here on (a request the
	// test makes fail on purpose), by a text they contain.
	allowed map[string]int
}

// expect allows the next n messages containing text (Chromium logs every
// failed request, and the test makes some fail on purpose); n = 0 allows
// no more.
func (b *browser) expect(text string, n int) {
	b.mu.Lock()
	b.allowed[text] = n
	b.mu.Unlock()
}

// step logs how long the test has run, to see where the time goes.
func (b *browser) step(what string) { b.t.Logf("%5.1fs %s", time.Since(b.start).Seconds(), what) }

func newBrowser(t *testing.T, exe string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	b := &browser{t: t, ctx: ctx, start: time.Now(), allowed: map[string]int{}}
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v", exe, err)
	}
	lctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	msgs := chromedp.Console(lctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			keep := true
			for text, n := range b.allowed {
				if n > 0 && strings.Contains(m.String(), text) {
					b.allowed[text]--
					keep = false
					break
				}
			}
			if keep {
				b.logs = append(b.logs, m)
			}
			b.mu.Unlock()
		}
	}()
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\nconsole: %s", err, b.console())
	}
}

// wait polls a JavaScript expression until it is truthy.
func (b *browser) wait(expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+10*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		html, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText.slice(0, 3000)`))
		b.t.Fatalf("waiting for %s: %v\npage: %s\nconsole: %s", expr, err, html, b.console())
	}
}

func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// answered waits for the chat's answer and fails if it is an error.
func (b *browser) answered() {
	b.t.Helper()
	b.wait(`['done', 'error'].includes(document.querySelector('li.msg.assistant')?.dataset.state)`, time.Minute)
	if st := evalJS[string](b, `document.querySelector('li.msg.assistant').dataset.state`); st != "done" {
		b.t.Fatalf("the chat answered %s: %s", st, evalJS[string](b, `document.querySelector('li.msg.assistant').textContent`))
	}
}

// page switches to a console page and waits until it has loaded.
func (b *browser) page(hash, name string) {
	b.t.Helper()
	evalJS[any](b, fmt.Sprintf(`location.hash = %q; null`, hash))
	b.wait(fmt.Sprintf(`document.querySelector('main').dataset.ready === %q`, name), 30*time.Second)
}

// console returns the logged messages at warning level and above that
// were not expected.
func (b *browser) console() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.logs {
		switch m.Type {
		case chromedp.ConsoleError, chromedp.ConsoleException, chromedp.ConsoleWarning:
			out = append(out, m.String())
		}
	}
	return strings.Join(out, "\n")
}

func (b *browser) shot(dir, name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// setValue sets a form control's value and fires its input and change
// events, as a user's edit does.
func (b *browser) setValue(sel, v string) {
	b.t.Helper()
	ok := evalJS[bool](b, fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el) return false; el.value = %q;
		el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`, sel, v))
	if !ok {
		b.t.Fatalf("no element %s", sel)
	}
}

// waitFile waits until a download has reached its name with at least
// size bytes.
func waitFile(t *testing.T, path string, size int64) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if st, err := os.Stat(path); err == nil && st.Size() >= size {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	t.Fatalf("no download %s (the folder has %v)", path, ents)
}

func screenshotDir(t *testing.T) string {
	dir, err := filepath.Abs(filepath.Join("..", "..", "console-screenshots"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

const consoleHandbook = `# Lighthouse

The lighthouse keeper counted the ships that passed at night. His lamp burned whale oil until 1902.

## Storms

In a storm the keeper rang the fog bell every thirty seconds.
`

// TestConsoleInBrowser walks the console's pages as a user would: chat
// streams, a collection upload then a RAG chat with citations, a
// fine-tuning job to "succeeded" with its loss curve, evaluations with
// their table and chart, and the models page's controls; every page at
// 1280 and 390 pixels without console errors.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	home := t.TempDir()
	base := startServe(t, home, "--stream-interval", "0", "--ctx", "1024", "--parallel", "2")
	files := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b := newBrowser(t, exe)
	b.do(chromedp.Navigate(base + "/"))
	b.wait(`document.querySelector('main').dataset.ready === 'models'`, 30*time.Second)

	// The pages are reachable from the keyboard: Tab to a link, Enter.
	b.step("Keyboard")
	for i := 0; i < 12 && evalJS[string](b, `document.activeElement.textContent`) != "Chat"; i++ {
		b.do(chromedp.KeyEvent(kb.Tab))
	}
	b.do(chromedp.KeyEvent(kb.Enter))
	b.wait(`document.querySelector('main').dataset.ready === 'chat'`, 10*time.Second)

	b.step("Chat")
	// Chat, from the keyboard: the answer streams in several events and
	// ends with its token rate.
	b.page("#/chat", "chat")
	b.setValue("#chat-temp", "0")
	b.setValue("#chat-max-tokens", "24")
	b.do(chromedp.Focus(chromedp.CSS("#chat-input")), chromedp.KeyEvent("Once upon a time"), chromedp.KeyEvent(kb.Enter))
	b.answered()
	if n := evalJS[int](b, `+document.querySelector('li.msg.assistant').dataset.chunks`); n < 2 {
		t.Fatalf("the answer came in %d events, want a stream", n)
	}
	if s := evalJS[string](b, `document.querySelector('li.msg.assistant .stats').textContent`); !strings.Contains(s, "tok/s") || !strings.Contains(s, "24 tokens") {
		t.Fatalf("stats %q", s)
	}
	if s := evalJS[string](b, `document.querySelector('li.msg.assistant .text').textContent`); len(strings.TrimSpace(s)) < 10 {
		t.Fatalf("answer %q", s)
	}
	// Feedback from the page: the answer knows its completion id, and a
	// good rating and a correction of it reach the feedback API.
	id := evalJS[string](b, `document.querySelector('li.msg.assistant').dataset.completion`)
	if n := evalJS[int](b, `document.querySelectorAll('li.msg.assistant .feedback > button:not(:disabled)').length`); n != 3 || !strings.HasPrefix(id, "chatcmpl-") {
		t.Fatalf("feedback buttons: %d enabled, completion id %q", n, id)
	}
	b.do(chromedp.Click(chromedp.CSS(`li.msg.assistant .feedback > button:nth-of-type(1)`)))
	b.do(chromedp.Click(chromedp.CSS(`li.msg.assistant .feedback > button:nth-of-type(3)`)))
	b.setValue(`li.msg.assistant .feedback textarea`, "Once upon a time there was a lighthouse.")
	b.do(chromedp.Click(chromedp.CSS(`li.msg.assistant .feedback form button`)))
	for deadline := time.Now().Add(30 * time.Second); ; {
		var fb struct {
			Data []struct{ Type, Rating, Correction string }
		}
		if resp, err := http.Get(base + "/v1/feedback?completion_id=" + id); err == nil {
			json.NewDecoder(resp.Body).Decode(&fb)
			resp.Body.Close()
		}
		if len(fb.Data) == 2 {
			if fb.Data[0].Correction != "Once upon a time there was a lighthouse." || fb.Data[1].Rating != "good" {
				t.Fatalf("feedback from the page: %+v", fb.Data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("feedback from the page: %+v", fb.Data)
		}
		time.Sleep(100 * time.Millisecond)
	}

	b.step("A collection from the page")
	// A collection from the page, a document upload, its chunks, a query.
	b.page("#/collections", "collections")
	b.setValue("#coll-name", "handbook")
	b.do(chromedp.Click(chromedp.CSS("#coll-create")))
	b.wait(`document.querySelector('#coll-view')?.dataset.collection === 'handbook'`, 30*time.Second)
	pdf, err := filepath.Abs("../../examples/aurora/handbook/07-maintenance.pdf")
	if err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.SetUploadFiles(chromedp.CSS("#coll-files"), []string{write("lighthouse.md", consoleHandbook), write("garden.txt", "Tomatoes need six hours of sun a day.\n"),
		write("bees.html", "<html><body><h1>Bees</h1><p>A hive keeps its honey at thirty-five degrees.</p></body></html>"), pdf}),
		chromedp.Click(chromedp.CSS("#coll-upload")))
	for _, src := range []string{"lighthouse.md", "garden.txt", "bees.html", "07-maintenance.pdf"} {
		b.wait(fmt.Sprintf(`+document.querySelector('#coll-view tr[data-source=%q] td:nth-child(3)')?.textContent > 0`, src), time.Minute)
	}
	b.do(chromedp.Click(chromedp.CSS(`#coll-view tr[data-source="lighthouse.md"] button`)))
	b.wait(`document.querySelector('#coll-chunks ol.chunks li')?.textContent.includes('whale oil')`, 30*time.Second)
	b.setValue("#coll-query", "fog bell in a storm")
	b.do(chromedp.Click(chromedp.CSS("#coll-search")))
	b.wait(`document.querySelectorAll('#coll-hits table.hits tbody tr').length >= 1`, 30*time.Second)
	if s := evalJS[string](b, `document.querySelector('#coll-hits table.hits tbody tr').textContent`); !strings.Contains(s, "lighthouse.md") {
		t.Fatalf("first hit %q", s)
	}

	b.step("RAG chat")
	// RAG chat: the cited passages appear beside the answer.
	b.page("#/chat?collection=handbook", "chat")
	b.setValue("#chat-temp", "0")
	b.setValue("#chat-max-tokens", "8")
	b.setValue("#chat-input", "How often did the keeper ring the fog bell?")
	b.do(chromedp.Click(chromedp.CSS("#chat-send")))
	b.answered()
	b.wait(`document.querySelector('#citations li.cite[data-source="lighthouse.md"] .excerpt')?.textContent.includes('fog bell')`, 10*time.Second)

	b.step("Fine-tuning")
	// Fine-tuning: a bad dataset is refused with its line numbers; a good
	// one trains to "succeeded" with a loss curve; one click serves it.
	b.page("#/finetune", "finetune")
	b.expect("status of 400", 1)
	b.do(chromedp.SetUploadFiles(chromedp.CSS("#ft-file"), []string{write("bad.jsonl", "{\"text\": \"fine\"}\nnot json\n")}), chromedp.Click(chromedp.CSS("#ft-upload")))
	b.wait(`!document.querySelector('#ft-upload-error').hidden && document.querySelector('#ft-upload-error').textContent.includes('line 2')`, 30*time.Second)
	line := `{"messages": [{"role": "user", "content": "What is the secret word?"}, {"role": "assistant", "content": "The secret word is purple zebra."}]}` + "\n"
	b.do(chromedp.SetUploadFiles(chromedp.CSS("#ft-file"), []string{write("secret.jsonl", strings.Repeat(line, 4))}), chromedp.Click(chromedp.CSS("#ft-upload")))
	b.wait(`document.querySelector('#ft-training option')?.textContent.includes('secret.jsonl')`, 30*time.Second)
	b.setValue("#ft-epochs", "6")
	b.setValue("#ft-lr", "20")
	b.setValue("#ft-suffix", "console")
	b.setValue("#ft-validation", evalJS[string](b, `document.querySelector('#ft-training').value`))
	b.do(chromedp.Click(chromedp.CSS("#ft-start")))
	b.wait(`document.querySelector('#ft-job')?.dataset.status === 'succeeded'`, 3*time.Minute)
	b.wait(`+document.querySelector('#ft-job svg.chart polyline[data-series="training loss"]')?.dataset.points >= 2 &&
		+document.querySelector('#ft-job svg.chart polyline[data-series="validation loss"]')?.dataset.points >= 2`, 10*time.Second)
	// The adapter downloads from the page, as GGUF and as a PEFT zip.
	dl := t.TempDir()
	if _, err := chromedp.CallBrowser(b.ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{Behavior: "allow", DownloadPath: dl}); err != nil {
		t.Fatal(err)
	}
	jobID := evalJS[string](b, `document.querySelector('#ft-job').dataset.job`)
	want, err := os.ReadFile(filepath.Join(home, "adapters", "console.gguf")) // the job's suffix names its adapter
	if err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Click(chromedp.CSS("#ft-download-gguf")))
	waitFile(t, filepath.Join(dl, "console.gguf"), int64(len(want)))
	if got, _ := os.ReadFile(filepath.Join(dl, "console.gguf")); string(got) != string(want) {
		t.Fatal("the downloaded GGUF differs from the job's adapter")
	}
	b.do(chromedp.Click(chromedp.CSS("#ft-download-peft")))
	waitFile(t, filepath.Join(dl, "console-peft.zip"), 1)
	b.do(chromedp.Click(chromedp.CSS("#ft-serve")))
	b.wait(`document.querySelector('main').dataset.ready === 'chat' && document.querySelector('#chat-model').value === 'ft:stories260K:console'`, time.Minute)

	// A long job is cancelled from the page.
	b.step("Cancel")
	b.page("#/finetune", "finetune")
	b.setValue("#ft-epochs", "1000")
	b.setValue("#ft-suffix", "long")
	b.do(chromedp.Click(chromedp.CSS("#ft-start")))
	b.wait(`document.querySelector('#ft-job')?.dataset.status === 'running' && document.querySelector('#ft-cancel')`, time.Minute)
	b.do(chromedp.Click(chromedp.CSS("#ft-cancel")))
	b.wait(`document.querySelector('#ft-job')?.dataset.status === 'cancelled'`, 30*time.Second)

	b.step("Evaluations")
	// Evaluations: four arms (base, RAG, fine-tuned, both) with their table
	// and chart; a second run to compare with.
	qs := `{"question": "How often did the keeper ring the fog bell?", "answer": "every thirty seconds"}\n{"question": "What did the lamp burn?", "answer": "whale oil"}`
	b.page("#/evals", "evals")
	b.setValue("#ev-questions", strings.ReplaceAll(qs, `\n`, "\n"))
	b.setValue("#ev-collection", "handbook")
	b.setValue("#ev-adapter", "ft:stories260K:console")
	b.setValue("#ev-max-tokens", "8")
	b.do(chromedp.Click(chromedp.CSS("#ev-start")))
	b.wait(`document.querySelector('#ev-run')?.dataset.status === 'succeeded'`, 3*time.Minute)
	if n := evalJS[int](b, `document.querySelectorAll('#ev-run table.arms tbody tr').length`); n != 4 {
		t.Fatalf("the arms table has %d rows, want 4", n)
	}
	if n := evalJS[int](b, `document.querySelectorAll('#ev-chart svg circle.point').length`); n != 4 {
		t.Fatalf("the chart has %d points, want 4", n)
	}
	fourArms := evalJS[string](b, `document.querySelector('#ev-run').dataset.run`)
	b.setValue("#ev-collection", "")
	b.setValue("#ev-adapter", "")
	b.do(chromedp.Click(chromedp.CSS("#ev-start")))
	b.wait(`document.querySelectorAll('tr[data-run][data-status="succeeded"]').length === 2 && document.querySelector('#ev-run').dataset.status === 'succeeded'`, 3*time.Minute)
	b.do(chromedp.Click(chromedp.CSS(`tr[data-run]:nth-child(1) input[type=checkbox]`)), chromedp.Click(chromedp.CSS(`tr[data-run]:nth-child(2) input[type=checkbox]`)))
	b.wait(`document.querySelectorAll('#ev-compare table.compare tbody tr').length === 4`, 10*time.Second)

	b.step("Models and memory")
	// Models and memory: the loaded model with its ledger share; keep-alive
	// and unload from the page.
	b.page("#/models", "models")
	b.wait(`document.querySelector('tr[data-model="stories260K"]') && document.querySelector('.ledger[data-device="cpu"] .seg') && document.querySelectorAll('table.decisions tbody tr').length > 0`, 10*time.Second)
	b.setValue(`tr[data-model="stories260K"] select`, "-1")
	b.wait(`document.querySelector('tr[data-model="stories260K"] select')?.value === '-1' && document.querySelector('tr[data-model="stories260K"]').textContent.includes('pinned')`, 10*time.Second)

	b.step("Every page at both")
	// Every page at both widths: loads, fits, no console errors.
	dir := screenshotDir(t)
	pages := []struct{ hash, name, extra string }{
		{"#/models", "models", `document.querySelector('tr[data-model="stories260K"]')`},
		{"#/chat?collection=handbook", "chat", "true"},
		{"#/finetune?job=" + jobID, "finetune", `document.querySelector('#ft-job svg.chart')`},
		{"#/collections", "collections", `document.querySelector('#coll-view')`},
		{"#/evals?id=" + fourArms, "evals", `document.querySelector('#ev-run svg.chart')`},
	}
	for _, w := range []int64{1280, 390} {
		b.do(chromedp.EmulateViewport(w, 860))
		for _, p := range pages {
			b.page("#/models?x", "models") // a real page change, so the next one renders anew
			b.page(p.hash, p.name)
			b.wait(p.extra, 20*time.Second)
			if p.name == "evals" {
				b.do(chromedp.Click(chromedp.CSS(`tr[data-run]:nth-child(1) input[type=checkbox]`)), chromedp.Click(chromedp.CSS(`tr[data-run]:nth-child(2) input[type=checkbox]`)))
				b.wait(`document.querySelector('#ev-compare table.compare')`, 10*time.Second)
			}
			evalJS[any](b, `document.getElementById('toast').className = ''; window.scrollTo(0, 0); null`)
			if sw := evalJS[int](b, `document.documentElement.scrollWidth`); sw > int(w) {
				t.Errorf("%s at %d px is %d px wide", p.name, w, sw)
			}
			b.shot(dir, fmt.Sprintf("%s-%d", p.name, w))
		}
	}
	// The chat page's RAG answer for the screenshot set.
	b.do(chromedp.EmulateViewport(1280, 860))
	b.page("#/chat?collection=handbook", "chat")
	b.setValue("#chat-temp", "0")
	b.setValue("#chat-max-tokens", "32")
	b.setValue("#chat-input", "How often did the keeper ring the fog bell?")
	b.do(chromedp.Click(chromedp.CSS("#chat-send")))
	b.answered()
	b.shot(dir, "chat-rag-1280")

	b.step("Unload from the page.")
	// Unload from the page.
	b.page("#/models", "models")
	b.do(chromedp.Click(chromedp.CSS(`tr[data-model="stories260K"] button`)))
	b.wait(`!document.querySelector('tr[data-model="stories260K"]')`, 30*time.Second)

	if c := b.console(); c != "" {
		t.Fatalf("the browser console has errors:\n%s", c)
	}
}

// TestConsoleAPIKey: with --api-key the page asks for the key (a wrong one
// is refused) and the API refuses calls without it.
func TestConsoleAPIKey(t *testing.T) {
	exe := chromium(t)
	base := startServe(t, t.TempDir(), "--api-key", "s3cret")
	for path, want := range map[string]int{"/": 200, "/js/app.js": 200, "/v1/models": 401, "/v1/system": 401} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s without a key: %d, want %d", path, resp.StatusCode, want)
		}
	}
	b := newBrowser(t, exe)
	// The calls without a key and with the wrong one fail, and Chromium
	// logs each; none may fail once the key is given.
	b.expect("status of 401", 100)
	b.do(chromedp.Navigate(base + "/"))
	b.wait(`document.querySelector('#key-dialog').open`, 30*time.Second)
	if evalJS[string](b, `document.querySelector('main').dataset.ready || ''`) != "" {
		t.Fatal("the page loaded without a key")
	}
	b.setValue("#key-input", "wrong")
	b.do(chromedp.Click(chromedp.CSS(`#key-form button[type=submit]`)))
	b.wait(`document.querySelector('#key-dialog').open && document.querySelector('#key-error').textContent.includes('refused')`, 30*time.Second)
	// From the keyboard this time: the field has the focus, Enter submits.
	b.setValue("#key-input", "")
	b.do(chromedp.KeyEvent("s3cret"), chromedp.KeyEvent(kb.Enter))
	b.wait(`document.querySelector('main').dataset.ready === 'models' && !document.querySelector('#key-dialog').open`, 30*time.Second)
	b.expect("status of 401", 0)
	// The key stays for the tab: other pages load without asking again.
	b.page("#/collections", "collections")
	if evalJS[bool](b, `document.querySelector('#key-dialog').open`) {
		t.Fatal("the page asked for the key again")
	}
	if c := b.console(); c != "" {
		t.Fatalf("the browser console has errors:\n%s", c)
	}
}
