package rag

import "context"

// openHNSWIndex opens the collection's persistent index.
// TODO(index): runtime/index is not there yet; until it is, collections use
// the exact in-memory index.
func openHNSWIndex(ctx context.Context, dir string, m Manifest) (vectorIndex, error) {
	return openFlatIndex(ctx, dir, m)
}
