package rag

import "context"

// openHNSWIndex opens the collection's persistent index.
// The HNSW index (runtime/index, issue 7) does not exist yet; until it
// does, collections use the exact index, which is correct but linear.
func openHNSWIndex(ctx context.Context, dir string, m Manifest) (vectorIndex, error) {
	return openFlatIndex(ctx, dir, m)
}
