package rag

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/llmrt/llmrt/runtime/index"
)

// Collections made before their vectors moved into an index.Store kept
//
//	vectors.bin       "LLMRTVEC" | u32 version 1 | u32 dim, then per chunk
//	                  u64 id | dim × f32 | u32 CRC-32C of id and floats
//	index/graph.hnsw  the HNSW graph, rebuilt from vectors.bin when in doubt
//	dirty             present while the graph might disagree with vectors.bin
//
// A writer migrates such a collection on open; a reader builds its index in
// memory from vectors.bin.
const (
	legacyVectors = "vectors.bin"
	legacyDirty   = "dirty"
	legacyHeader  = 16
)

// readLegacyVectors returns the vectors in vectors.bin of the chunks in
// live, by id. Like its writer it stops at the first record that is torn,
// fails its CRC or does not increase the id.
func readLegacyVectors(path string, dim int, live map[uint64]*Chunk) ([]uint64, [][]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, legacyHeader)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, nil, nil // torn before its header: no vectors
	}
	if string(hdr[:8]) != "LLMRTVEC" || binary.LittleEndian.Uint32(hdr[8:]) != 1 {
		return nil, nil, fmt.Errorf("%s: not a vector file", path)
	}
	if d := int(binary.LittleEndian.Uint32(hdr[12:])); d != dim {
		return nil, nil, fmt.Errorf("%s: vectors have dimension %d, the collection %d", path, d, dim)
	}
	table := crc32.MakeTable(crc32.Castagnoli)
	rec := make([]byte, 12+4*dim)
	var ids []uint64
	var vecs [][]float32
	var last uint64
	for n := 0; ; n++ {
		if _, err := io.ReadFull(r, rec); err != nil {
			break
		}
		if crc32.Checksum(rec[:len(rec)-4], table) != binary.LittleEndian.Uint32(rec[len(rec)-4:]) {
			break
		}
		id := binary.LittleEndian.Uint64(rec)
		if n > 0 && id <= last {
			break
		}
		last = id
		if live[id] == nil {
			continue
		}
		v := make([]float32, dim)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(rec[8+4*i:]))
		}
		ids, vecs = append(ids, id), append(vecs, v)
	}
	return ids, vecs, nil
}

// migrate moves the vectors of live chunks from vectors.bin into a vector
// store built in index.new, which then replaces index/ (it held only the
// derived graph); vectors.bin and the dirty marker go last. A crash at any
// step leaves vectors.bin, and the next open migrates again. Chunks that
// vectors.bin lacks are embedded again by reconcile.
func (c *Collection) migrate(ctx context.Context, opt index.Options) error {
	ids, vecs, err := readLegacyVectors(filepath.Join(c.dir, legacyVectors), c.man.Dim, c.chunks)
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, indexDir+".new")
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	st, _, err := index.Open(tmp, index.StoreOptions{Options: opt, SnapshotEvery: -1})
	if err != nil {
		return err
	}
	for i := 0; i < len(ids) && err == nil; i += 4096 {
		j := min(i+4096, len(ids))
		err = st.Add(ctx, ids[i:j], vecs[i:j], nil)
	}
	if err == nil {
		err = st.Snapshot()
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	dst := filepath.Join(c.dir, indexDir)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	if err := syncDir(dst); err != nil {
		return err
	}
	for _, name := range []string{legacyVectors, legacyDirty} {
		if err := os.Remove(filepath.Join(c.dir, name)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return syncDir(dst)
}

// legacyIndex builds a reader's index in memory from vectors.bin.
func (c *Collection) legacyIndex(opt index.Options) (*index.HNSW, error) {
	ids, vecs, err := readLegacyVectors(filepath.Join(c.dir, legacyVectors), c.man.Dim, c.chunks)
	if err != nil {
		return nil, err
	}
	h, err := index.New(opt)
	if err != nil {
		return nil, err
	}
	if err := h.AddBatch(ids, vecs, nil, 0); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}
