// Command loadgen is a load generator for any OpenAI-compatible server:
// llmrt serve, llama.cpp's llama-server, vLLM. It uses only the standard
// library and one keep-alive HTTP transport, as a client library would.
//
//	go run ./scripts/loadgen -url http://127.0.0.1:8080 -model NAME [flags]
//	go run ./scripts/loadgen -mode embeddings -emb-batch 1,16 -streams 1,4 -duration 10s
//
// # Generation (-mode chat or completions)
//
// Every request streams ("stream": true, "stream_options":
// {"include_usage": true}) with temperature 0, max_tokens -max-tokens and,
// unless -ignore-eos=false, "ignore_eos": true so that all requests generate
// the same number of tokens. Its prompt is -prompt-tokens words drawn from a
// list of common one-token English words with a seed of its own, so that no
// two requests share a prefix the server could cache (-shared-prefix makes
// them share all but their last 8 words). Tokenizers differ: the server's
// own count (usage.prompt_tokens) is printed when it reports one.
//
// A warm-up of -warmup requests runs first. Then, for each -streams level S,
// -requests requests (default 2×S, at least 2) are sent by min(S, requests)
// clients, each sending its next request as soon as its previous one ended.
//
// Per request:
//
//   - TTFT: from sending the request (its first attempt, so a retry counts)
//     to the first SSE chunk with non-empty content, reasoning_content or
//     text.
//   - decode time: from that first chunk to the last chunk with text.
//   - tokens: usage.completion_tokens when reported, else the number of
//     chunks with text.
//   - stream tok/s: (tokens-1) / decode time; the first token belongs to
//     prefill.
//
// Per level (the columns of the table):
//
//   - reqs, ok, err: requests sent, finished with text, and failed. An error
//     is a non-2xx answer (its OpenAI-shaped message is shown), a failure
//     after the response started, or a failed retry.
//   - retry: requests retried because the connection failed before any
//     response, for example a kept-alive connection the server closed
//     (llama-server does this at times); each is retried once. Retries Go's
//     transport makes by itself are counted too.
//   - prompt_tok: mean usage.prompt_tokens, n/a if not reported.
//   - gen_tok: generated tokens of all successful requests.
//   - ttft_p50_ms, ttft_p95_ms: percentiles of TTFT (linear interpolation
//     between closest ranks).
//   - stream_tok/s: mean of the per-request stream tok/s.
//   - decode_agg_tok/s: the server's throughput while all clients of the
//     level are decoding at once. A stream decodes from its first to its last
//     token; the window is where all min(S, requests) streams do, that is
//     from the last first-token to the first last-token of streams running
//     together (the union of such windows over the level). The tokens that
//     arrived inside the window, each window taken as (start, end], are
//     divided by the window's length. Prefill of other requests and the tail
//     where fewer streams run are left out. n/a when the window is empty.
//   - wall_agg_tok/s: all generated tokens / the time from the level's first
//     send to its last finish, prefill and tails included.
//
// # Embeddings (-mode embeddings)
//
// For each number of clients in -streams and each batch size in -emb-batch,
// the clients POST /v1/embeddings with "input" arrays of batch strings of
// about -emb-tokens tokens (all different) for -duration. emb/s and req/s
// are successful embeddings and requests per second of that time;
// lat_p50_ms and lat_p95_ms are request latency percentiles.
//
// # Safety and output
//
// A URL whose host is not a loopback address is refused unless
// -allow-remote is given. -api-key (default $OPENAI_API_KEY) is sent as a
// bearer token. The table goes to stdout, progress and errors to stderr,
// and -json FILE writes every figure and every request. Ctrl-C stops the
// requests in flight and prints what was measured (exit status 130).
package main
