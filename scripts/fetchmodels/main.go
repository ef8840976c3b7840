// Command fetchmodels downloads the test models into a folder when
// ../shared/models is not there (make test-models), checking the sha256
// digests recorded in models/store's catalogue.
//
//	go run ./scripts/fetchmodels DIR
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"

	"github.com/llmrt/llmrt/models/store"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fetchmodels DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tmp, err := os.MkdirTemp("", "fetchmodels-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(tmp)
	s, err := store.Open(tmp)
	if err != nil {
		fail(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail(err)
	}
	cat := store.Catalog()
	names := make([]string, 0, len(cat))
	for n := range cat {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		dst := filepath.Join(dir, name+".gguf")
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		fmt.Printf("fetching %s from %s\n", name, cat[name].Source)
		m, err := s.Pull(ctx, name, store.PullOptions{Token: os.Getenv("HF_TOKEN")})
		if err != nil {
			fail(err)
		}
		if err := os.Rename(m.Path, dst); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fetchmodels:", err)
	os.Exit(1)
}
