package main

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func readAll(t *testing.T, s string) []sseEvent {
	t.Helper()
	r := newSSEReader(strings.NewReader(s))
	var evs []sseEvent
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		evs = append(evs, ev)
	}
}

func TestSSEReader(t *testing.T) {
	stream := ": keep-alive\n\n" +
		"data: {\"a\":1}\n\n" +
		"data: {\"b\":\r\ndata: 2}\r\n\r\n" + // CRLF, two data lines
		"id: 7\nretry: 100\n\n" + // no data: dropped
		":ping\r\n" +
		"event: message\ndata:{\"c\":3}\n\n" + // no space after the colon
		"error: {\"error\":{\"message\":\"boom\"}}\n\n" + // llama.cpp
		"data: [DONE]\n\n" +
		"data: tail" // cut off without a blank line
	got := readAll(t, stream)
	want := []sseEvent{
		{Data: `{"a":1}`},
		{Data: "{\"b\":\n2}"},
		{Name: "message", Data: `{"c":3}`},
		{Name: "error", Data: `{"error":{"message":"boom"}}`},
		{Data: "[DONE]"},
		{Data: "tail"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	if evs := readAll(t, ""); len(evs) != 0 {
		t.Fatalf("empty stream gave %q", evs)
	}
}

// An OpenAI chat stream as the official API frames it: a role chunk, text
// chunks, a finish chunk, a usage chunk with no choices, [DONE].
const chatStream = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n" +
	": keep-alive\r\n\r\n" +
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n" +
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" upon\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n" +
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\" a\"},\"finish_reason\":null}]}\r\n\r\n" +
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\r\n\r\n" +
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16}}\r\n\r\n" +
	"data: [DONE]\r\n\r\n"

func TestReadStreamChat(t *testing.T) {
	var res genResult
	if err := readStream(strings.NewReader(chatStream), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Times) != 3 {
		t.Errorf("text chunks = %d, want 3 (role and finish chunks carry no text)", len(res.Times))
	}
	if res.Tokens != 4 || !res.UsageTokens || res.PromptTokens != 12 {
		t.Errorf("tokens=%d fromUsage=%v prompt=%d, want 4 true 12", res.Tokens, res.UsageTokens, res.PromptTokens)
	}
}

func TestReadStreamCompletionsWithoutUsage(t *testing.T) {
	s := "data: {\"choices\":[{\"text\":\"a\",\"index\":0,\"finish_reason\":null}]}\n\n" +
		"data: {\"choices\":[{\"text\":\" b\",\"index\":0,\"finish_reason\":null}]}\n\n" +
		"data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n" +
		"data: [DONE]\n\n"
	var res genResult
	if err := readStream(strings.NewReader(s), &res); err != nil {
		t.Fatal(err)
	}
	if res.Tokens != 2 || res.UsageTokens || res.PromptTokens != 0 {
		t.Errorf("tokens=%d fromUsage=%v prompt=%d, want 2 false 0", res.Tokens, res.UsageTokens, res.PromptTokens)
	}
}

func TestReadStreamErrors(t *testing.T) {
	for name, tc := range map[string]struct{ stream, want string }{
		"error chunk": {"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"error\":{\"message\":\"KV cache full\"}}\n\n",
			"server error in stream: KV cache full"},
		"llama.cpp error field": {"error: {\"code\":500,\"message\":\"slot died\"}\n\n", "slot died"},
		"cut off":               {"data: {\"choices\":[{\"text\":\"a\"}]}\n\n", "without finish_reason or [DONE]"},
		"not json":              {"data: hello\n\n", "decoding chunk"},
	} {
		t.Run(name, func(t *testing.T) {
			var res genResult
			err := readStream(strings.NewReader(tc.stream), &res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestReadStreamTimesChunks(t *testing.T) {
	// Chunks that arrive apart get their own arrival times.
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n")
		time.Sleep(30 * time.Millisecond)
		io.WriteString(pw, "data: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
		pw.Close()
	}()
	var res genResult
	if err := readStream(pr, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Times) != 2 {
		t.Fatalf("times = %d, want 2", len(res.Times))
	}
	if d := res.Times[1].Sub(res.Times[0]); d < 25*time.Millisecond {
		t.Errorf("gap between chunks = %v, want about 30ms", d)
	}
}
