package chat

import (
	"strings"
	"sync"
	"testing"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

const qwen25 = `{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`

const llama3 = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`

const mistral = `{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}`

func render(t *testing.T, src, bos, eos string, msgs []Message, tools []Tool, gen bool) string {
	t.Helper()
	tm, err := Parse(src, bos, eos)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tm.Render(msgs, tools, gen)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRealTemplates(t *testing.T) {
	conv := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello!"}, {Role: "user", Content: "Bye"}}
	if got, want := render(t, qwen25, "", "<|im_end|>", conv, nil, true),
		"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"; got != want {
		t.Errorf("qwen2.5:\n%q\nwant\n%q", got, want)
	}
	if got, want := render(t, llama3, "<|begin_of_text|>", "<|eot_id|>", conv[1:3], nil, true),
		"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"; got != want {
		t.Errorf("llama3:\n%q\nwant\n%q", got, want)
	}
	if got, want := render(t, mistral, "<s>", "</s>", conv[1:], nil, false), "<s>[INST] Hi [/INST]Hello!</s>[INST] Bye [/INST]"; got != want {
		t.Errorf("mistral:\n%q\nwant\n%q", got, want)
	}
	// The Phi-3 template shipped in the shared vocabulary file.
	f, err := gguf.Open(testmodel.Shared(t, "ggml-vocab-phi-3.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	src, _ := f.String("tokenizer.chat_template")
	got := render(t, src, "<s>", "<|endoftext|>", conv[1:], nil, true)
	for _, want := range []string{"<|user|>\nHi<|end|>\n", "<|assistant|>\nHello!<|end|>\n", "<|user|>\nBye<|end|>\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("phi-3 output %q lacks %q", got, want)
		}
	}
	if !strings.HasSuffix(got, "<|assistant|>\n") {
		t.Errorf("phi-3 generation prompt missing: %q", got)
	}
}

func TestToolsRenderAndParse(t *testing.T) {
	tools := []Tool{{Name: "get_weather", Description: "Weather for a city", Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}}
	msgs := []Message{{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []ToolCall{{ID: "c1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		{Role: "tool", ToolCallID: "c1", Content: "18C, sunny"}}
	out := render(t, qwen25, "", "<|im_end|>", msgs, tools, true)
	for _, want := range []string{`"name": "get_weather"`, "<tools>", `<tool_call>` + "\n" + `{"name": "get_weather", "arguments": {"city": "Paris"}}`, "<tool_response>\n18C, sunny\n</tool_response>"} {
		if !strings.Contains(strings.ReplaceAll(out, `"city":"Paris"`, `"city": "Paris"`), want) {
			t.Errorf("tools render lacks %q:\n%s", want, out)
		}
	}
	tm, _ := Parse(qwen25, "", "")
	if !tm.SupportsTools() {
		t.Error("qwen2.5 template supports tools")
	}
	if tm, _ := Parse(llama3, "", ""); tm.SupportsTools() {
		t.Error("llama3 template has no tools")
	}
	for _, c := range []struct {
		text, name, args, rest string
	}{
		{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "get_weather", `{"city": "Paris"}`, ""},
		{"Let me check.<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>", "f", `{}`, "Let me check."},
		{`[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}]`, "f", `{"x": 1}`, ""},
		{`{"name": "f", "parameters": {"x": 2}}`, "f", `{"x": 2}`, ""},
		{`{"name": "f", "arguments": "{\"x\": 3}"}`, "f", `{"x": 3}`, ""},
	} {
		calls, rest, ok := ParseToolCalls(c.text)
		if !ok || len(calls) != 1 || calls[0].Name != c.name || calls[0].Arguments != c.args || rest != c.rest {
			t.Errorf("ParseToolCalls(%q) = %+v %q %v", c.text, calls, rest, ok)
		}
	}
	if _, _, ok := ParseToolCalls("Just text, no call."); ok {
		t.Error("plain text parsed as a call")
	}
}

func TestRaiseExceptionIsAnError(t *testing.T) {
	tm, err := Parse(mistral, "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tm.Render([]Message{{Role: "assistant", Content: "first"}}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "alternate") {
		t.Fatalf("raise_exception: %v", err)
	}
	if _, err := Parse("{% for %}", "", ""); err == nil {
		t.Fatal("broken template parsed")
	}
}

func TestConcurrentRender(t *testing.T) {
	tm, _ := Parse(qwen25, "", "")
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := tm.Render([]Message{{Role: "user", Content: strings.Repeat("x", i)}}, nil, true)
			if err != nil || !strings.Contains(out, strings.Repeat("x", i)+"<|im_end|>") {
				t.Errorf("render %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}
