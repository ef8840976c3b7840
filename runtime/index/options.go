package index

import (
	"errors"
	"fmt"
	"strings"
)

// Metric is the similarity an index ranks by.
type Metric int

const (
	// Cosine ranks by cosine similarity. Vectors are normalised on insert
	// and queries on search, so the score is their dot product in [-1, 1].
	Cosine Metric = iota
	// Dot ranks by the raw inner product (maximum inner product search).
	Dot
	// L2 ranks by Euclidean distance; the score is the negated squared
	// distance, so higher is still better.
	L2
)

// ParseMetric parses "cosine", "dot" or "l2" (case-insensitive).
func ParseMetric(s string) (Metric, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "cosine":
		return Cosine, nil
	case "dot":
		return Dot, nil
	case "l2":
		return L2, nil
	}
	return 0, fmt.Errorf("index: unknown metric %q (want cosine, dot or l2)", s)
}

// String returns the name ParseMetric accepts.
func (m Metric) String() string {
	switch m {
	case Cosine:
		return "cosine"
	case Dot:
		return "dot"
	case L2:
		return "l2"
	}
	return fmt.Sprintf("Metric(%d)", int(m))
}

func (m Metric) valid() bool { return m == Cosine || m == Dot || m == L2 }

// Options configure an index. Zero fields take the documented defaults.
type Options struct {
	Dim            int    // vector width; required
	Metric         Metric // Cosine (default), Dot or L2
	M              int    // links per node on upper layers (layer 0 keeps 2*M); default 16
	EfConstruction int    // beam width while inserting; default 200 (raised to M)
	EfSearch       int    // default beam width while searching; default 64
	// Quantize stores an int8 scalar-quantised code (one scale per vector)
	// beside every float32 vector. Searches walk the graph on the codes and
	// re-rank their ef best candidates with the float32 vectors.
	Quantize bool
	Seed     int64 // seeds the random layer assignment
	// ExactBelow: while fewer live items than this are stored, Search
	// scans them all exactly. Default 1000; negative disables the scan.
	ExactBelow int
}

// Limits on what an index (or a snapshot) may declare.
const (
	MaxDim    = 1 << 16 // widest vector
	maxM      = 256     // most links per upper-layer node
	maxLevels = 24      // highest layer is maxLevels-1
)

// Errors callers may test for with errors.Is.
var (
	ErrClosed    = errors.New("index: closed")
	ErrDuplicate = errors.New("duplicate id")
	ErrDim       = errors.New("dimension mismatch")
	ErrNotFinite = errors.New("vector has NaN or Inf")
	ErrZero      = errors.New("zero vector under cosine metric")
	ErrCorrupt   = errors.New("index: corrupt snapshot")
)

// withDefaults validates opt and fills in its defaults.
func (opt Options) withDefaults() (Options, error) {
	if opt.Dim <= 0 || opt.Dim > MaxDim {
		return opt, fmt.Errorf("index: options: Dim %d out of range 1..%d", opt.Dim, MaxDim)
	}
	if !opt.Metric.valid() {
		return opt, fmt.Errorf("index: options: unknown metric %d", int(opt.Metric))
	}
	if opt.M == 0 {
		opt.M = 16
	}
	if opt.M < 2 || opt.M > maxM {
		return opt, fmt.Errorf("index: options: M %d out of range 2..%d", opt.M, maxM)
	}
	if opt.EfConstruction == 0 {
		opt.EfConstruction = 200
	}
	if opt.EfConstruction < 0 {
		return opt, fmt.Errorf("index: options: negative EfConstruction %d", opt.EfConstruction)
	}
	opt.EfConstruction = max(opt.EfConstruction, opt.M)
	if opt.EfSearch == 0 {
		opt.EfSearch = 64
	}
	if opt.EfSearch < 0 {
		return opt, fmt.Errorf("index: options: negative EfSearch %d", opt.EfSearch)
	}
	if opt.ExactBelow == 0 {
		opt.ExactBelow = 1000
	}
	return opt, nil
}
