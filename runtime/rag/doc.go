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
//	index/         the chunk vectors and their HNSW graph: an index.Store
//	               (checksummed log, snapshots, recovery; see runtime/index)
//	lock           flock held by the process writing the collection
//
// Storing a document appends its vectors to the vector store (fsynced),
// then its record to the chunk log (fsynced): the record is the commit
// point, and the document is acknowledged (AddOptions.Stored, AddReport)
// only after it. Then the vectors of the document's old version are
// deleted. Removing a source logs a "del" record, then deletes its vectors.
// Opening a collection for writing cuts a torn last record from both logs
// and reconciles them by chunk id, the chunk log deciding: vectors of no
// live chunk (a commit or removal cut short) are deleted, and a live chunk
// without its vector (lost to a corrupt vector log record, or a removed
// index/) is embedded again. A crash at any point therefore loses nothing
// that was acknowledged and leaves nothing half stored. The chunk log is
// rewritten when most of it is dead, and the graph rebuilt when most of its
// nodes are deleted ones (index.Store.Compact). Collections in the earlier
// layout (vectors.bin beside a derived graph) are migrated on open.
//
// A read-only Store (StoreOptions.ReadOnly) reads collections without the
// lock and without writing, beside a writer: it reads the chunk log, then
// the vectors (index.OpenReadOnly), and reads both again if the log changed
// meanwhile, so every chunk it sees has its vector.
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
