package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

// FuzzCompletionsLive sends generated request bodies to a real server with
// a real model (stories260K) and fails on any 5xx, on a refusal that is not
// an OpenAI error object, and, by the fuzzer's own rules, on a process that
// dies. Each input is sent twice: as the raw body, and as a completions
// request built from its fields (token-array prompts with ids inside and
// outside the vocabulary, echo, logprobs, n, best_of, logit_bias, grammars
// that dead-end, streams) so the fuzzer reaches the engine and llama.cpp,
// not only the decoders. `make test` runs it for a bounded time.
func FuzzCompletionsLive(f *testing.F) {
	for _, seed := range []string{
		`{"model":"stories260K","prompt":[999999999],"max_tokens":2}`,
		`{"model":"stories260K","prompt":[512],"max_tokens":2}`,
		`{"model":"stories260K","prompt":[-5],"max_tokens":2}`,
		`{"model":"stories260K","prompt":[[1,2],[70000]],"max_tokens":2}`,
		`{"prompt":[600],"echo":true}`,
		`{"prompt":"Once upon a time","max_tokens":4,"logprobs":5,"echo":true}`,
		`{"prompt":"hi","grammar":"root ::= \"a\" <[2]>","max_tokens":3,"stream":true}`,
	} {
		f.Add([]byte(seed), []byte{}, uint8(0), uint8(0), int8(-1), int32(0))
	}
	f.Add([]byte(`{}`), []byte{1, 0, 0x93, 1, 0xff, 0xff}, uint8(0b1011), uint8(2), int8(3), int32(70000))
	f.Add([]byte(`[`), []byte{0, 2, 0, 0}, uint8(0b110101), uint8(1), int8(0), int32(-3))
	f.Add([]byte(`{"prompt":[[]],"n":0}`), []byte{0x10, 0x27}, uint8(0b11000000), uint8(9), int8(6), int32(511))

	ts := startServer(f, Config{}, engine.Options{NParallel: 2, CtxPerSeq: 256})
	grammars := []string{"", `root ::= "yes" | "no"`, `root ::= <[999999]>`, `root ::= "a" <[2]>`}
	f.Fuzz(func(t *testing.T, raw, toks []byte, flags, n uint8, logprobs int8, bias int32) {
		send(t, ts, "/v1/completions", raw)
		send(t, ts, "/v1/embeddings", raw)

		// Token ids from pairs of bytes, signed, so that about half fall
		// outside stories260K's 512-token vocabulary.
		var ids []int32
		for i := 0; i+1 < len(toks) && len(ids) < 64; i += 2 {
			ids = append(ids, int32(int16(binary.LittleEndian.Uint16(toks[i:]))))
		}
		req := map[string]any{"max_tokens": 1 + int(n%6), "temperature": float32(flags%3) / 2}
		switch {
		case len(ids) == 0:
			req["prompt"] = string(raw)
		case flags&0x40 != 0:
			req["prompt"] = [][]int32{ids[:len(ids)/2], ids[len(ids)/2:]}
		default:
			req["prompt"] = ids
		}
		if flags&0x01 != 0 {
			req["echo"] = true
		}
		if flags&0x02 != 0 {
			req["logprobs"] = int(logprobs)
		}
		if flags&0x04 != 0 {
			req["stream"] = true
			req["stream_options"] = map[string]any{"include_usage": flags&0x80 != 0}
		}
		if flags&0x08 != 0 {
			req["logit_bias"] = map[string]float32{fmt.Sprint(bias): float32(logprobs)}
		}
		if flags&0x10 != 0 {
			req["n"] = int(n % 4)
			req["best_of"] = int(logprobs % 3)
		}
		if g := grammars[int(flags>>5)%len(grammars)]; g != "" && flags&0x20 != 0 {
			req["grammar"] = g
		}
		body, _ := json.Marshal(req)
		send(t, ts, "/v1/completions", body)
		emb, _ := json.Marshal(map[string]any{"input": req["prompt"]})
		send(t, ts, "/v1/embeddings", emb)
	})
}

// send posts body and checks the answer: never a 5xx, and every refusal an
// OpenAI error object.
func send(t *testing.T, ts *testServer, path string, body []byte) {
	t.Helper()
	resp, err := http.Post(ts.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: %v (did the server die?)", path, body, err)
	}
	var data bytes.Buffer
	data.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s: %d %s", path, body, resp.StatusCode, data.Bytes())
	}
	if resp.StatusCode >= 400 {
		var e struct{ Error httpapi.APIError }
		if err := json.Unmarshal(data.Bytes(), &e); err != nil || e.Error.Message == "" {
			t.Fatalf("%s %s: %d without an OpenAI error object: %s", path, body, resp.StatusCode, data.Bytes())
		}
		return
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		if !bytes.HasSuffix(bytes.TrimSpace(data.Bytes()), []byte("data: [DONE]")) {
			t.Fatalf("%s %s: stream without [DONE]: %s", path, body, data.Bytes())
		}
		return
	}
	if !json.Valid(data.Bytes()) {
		t.Fatalf("%s %s: 200 with a body that is not JSON: %.300s", path, body, data.Bytes())
	}
}
