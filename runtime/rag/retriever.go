package rag

import "context"

// Search opens a collection and searches it for the k best hits. An
// unknown or invalid collection name gives an error matching ErrNotFound.
func (s *Store) Search(ctx context.Context, collection, query string, k int, opt SearchOptions) ([]Hit, error) {
	c, err := s.Get(ctx, collection)
	if err != nil {
		return nil, err
	}
	opt.K = k
	return c.Search(ctx, query, opt)
}
