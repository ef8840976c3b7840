// Package rag is llmrt's retrieval-augmented generation layer: collections
// of document chunks with their sources and byte offsets, ingestion of text,
// Markdown, HTML and PDF files, retrieval by vector (optionally fused with
// BM25 and diversified with MMR), and answers that cite their sources.
//
// A Store is a directory of collections ($LLMRT_HOME/collections). Each
// collection directory holds
//
//	manifest.json  embedding model, dimension, metric, chunking, creation time
//	chunks.jsonl   append-only log: one record per ingested or removed source
//	vectors.bin    append-only chunk vectors (fixed-size records with CRC)
//	index/         the HNSW index (runtime/index), derived from vectors.bin
//	lock           flock held while the collection is open
//
// The chunk log is the commit point: a source's chunks become visible when
// its record is appended and synced, after its vectors were written to
// vectors.bin and added to the index. A torn last line is ignored on load.
// The vector index is a derived structure: when a collection was not closed
// cleanly (a crash), or the index disagrees with the log, it is rebuilt from
// vectors.bin, so no state can hold a chunk without its vector or a vector
// of a removed chunk. Logs are compacted (atomically rewritten) when most of
// their records are dead.
//
// Chunking splits a document into sections by headings (Markdown #/setext,
// HTML h1-h6, PDF pages), sections into paragraphs and sentences, and packs
// them into chunks of at most ChunkOptions.Size tokens (counted with the
// embedding model's tokenizer, the section title included) with
// ChunkOptions.Overlap tokens of whole sentences carried over between
// neighbouring chunks of a section. Over-long sentences are split by words,
// over-long words by characters. A chunk never crosses a section boundary,
// and Chunk.Text is exactly Document.Text[Start:End].
//
// Offsets refer to the text the file's reader produced: the file itself for
// .txt and .md, the visible text for HTML (scripts, styles and navigation
// dropped, block elements separated by blank lines), and the output of
// pdftotext for PDF.
//
// PDF text comes from poppler's pdftotext (Debian package poppler-utils),
// run as a subprocess. Pure-Go readers were tried first
// (github.com/ledongthuc/pdf): on a plain Helvetica PDF its text ran lines
// together ("jumps.Second line") and words positioned by TJ kerning, as
// TeX writes them, came out glued ("Kernedwordswithoutspaces"), because the
// standard fonts carry no widths to place glyphs by. pdftotext lays text
// out from glyph positions and font metrics, maps ligatures and CID fonts
// through ToUnicode, and marks pages with form feeds, which become
// sections here. Without pdftotext on PATH, PDF files fail with
// ErrNoPDFTool and the other formats still ingest.
//
// Ingestion reads, hashes, parses and chunks every changed file of a
// folder before embedding (so the progress total is exact); the chunk
// texts of one AddPath call are held in memory until they are stored.
//
// StoreOptions.Exact swaps the HNSW index for an exhaustive in-memory
// search rebuilt from vectors.bin on open, for small collections and tests.
//
// Retrieval embeds the query and searches the index (the index itself
// scans exhaustively while a collection is small). Hybrid mode also ranks
// chunks with BM25 over their titles and texts (kept in memory, rebuilt on
// load) and fuses both lists by reciprocal-rank fusion (k = 60). MMR
// (SearchOptions.MMR) reorders the candidates to trade relevance for
// diversity using the stored chunk vectors.
//
// Embeddings come from an Embedder; EngineEmbedder adapts a loaded
// runtime/engine model; cmd/llmrt adapts Store.Search to the server and to eval.
package rag
