// Command genmodel writes the generated benchmark models (random weights,
// real tokenizers from ../shared/models) and prints their paths. Models are
// cached by their specification, so a second run is instant.
//
//	go run ./scripts/genmodel -spec qwen2-0.5b -type q8_0
//	go run ./scripts/genmodel -spec tiny-llama
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

func main() {
	spec := flag.String("spec", "qwen2-0.5b", "model shape: qwen2-0.5b (n_embd 896, 24 layers, vocab 151936) or tiny-llama (n_embd 256, 4 layers, vocab 32000, f32)")
	typ := flag.String("type", "q8_0", "weight type for qwen2-0.5b: q8_0, q4_k, f16 or f32")
	dir := flag.String("dir", testmodel.CacheDir(), "cache directory (env LLMRT_BENCH_DIR)")
	flag.Parse()
	if err := run(*spec, *typ, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "genmodel:", err)
		os.Exit(1)
	}
}

func run(spec, typ, dir string) error {
	var s testmodel.Spec
	switch spec {
	case "qwen2-0.5b":
		t, err := parseType(typ)
		if err != nil {
			return err
		}
		s = testmodel.Qwen2_05B(testmodel.SharedDir(), t)
	case "tiny-llama":
		s = testmodel.TinyLlama(testmodel.SharedDir())
	default:
		return fmt.Errorf("unknown -spec %q (want qwen2-0.5b or tiny-llama)", spec)
	}
	p, err := testmodel.CachedPath(context.Background(), dir, s)
	if err != nil {
		return err
	}
	fmt.Println(p)
	return nil
}

func parseType(s string) (gguf.Type, error) {
	switch strings.ToLower(s) {
	case "q8_0":
		return gguf.TypeQ8_0, nil
	case "q4_k", "q4_k_m":
		return gguf.TypeQ4_K, nil
	case "f16":
		return gguf.TypeF16, nil
	case "f32":
		return gguf.TypeF32, nil
	}
	return 0, fmt.Errorf("unknown -type %q (want q8_0, q4_k, f16 or f32)", s)
}
