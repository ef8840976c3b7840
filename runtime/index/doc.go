// Package index is llmrt's in-process approximate nearest-neighbour index: a
// hierarchical navigable small-world graph (HNSW, Malkov & Yashunin 2016)
// over float32 vectors, used by runtime/rag to find the chunks closest to an
// embedded question.
//
// An index holds vectors of one width under one metric (Cosine, Dot or L2),
// each under a caller-chosen uint64 id with optional string metadata:
//
//	idx, err := index.New(index.Options{Dim: 384, Metric: index.Cosine})
//	err = idx.Add(42, embedding, index.Meta{"source": "handbook.md"})
//	hits, err := idx.Search(question, 10, index.SearchOptions{})
//
// Results carry a similarity score where higher is better: the cosine
// similarity, the dot product, or the negated squared Euclidean distance.
//
// What it does:
//   - Distances run in AVX2+FMA assembly on amd64 CPUs that have it and in
//     portable Go elsewhere; cosine vectors are normalised once, on insert.
//   - Search may run concurrently with Add, AddBatch and Delete; AddBatch
//     inserts in parallel.
//   - Delete leaves a tombstone: the node keeps routing searches but is never
//     returned; neighbourhoods that become mostly dead are reconnected.
//   - SearchOptions.Filter is applied during the graph walk, so filtered
//     searches still return k matches when enough exist.
//   - Options.Quantize keeps an int8 copy of every vector, walks the graph
//     on it, and re-ranks the final candidates with the float32 vectors.
//   - Below Options.ExactBelow live items a search scans every item exactly.
//   - WriteTo and Read save and load a complete, checksummed snapshot.
//   - Store keeps an index durable in a directory: every Add and Delete is
//     appended to a checksummed log and fsynced before it returns, snapshots
//     are taken every StoreOptions.SnapshotEvery operations, and Open
//     replays the log after the newest good snapshot, cutting a torn tail
//     and reporting (never loading) a corrupt record (see durable.go).
//     OpenReadOnly loads the same state without the lock or any write, beside
//     a Store open in another process; Store.Compact drops tombstones.
package index
