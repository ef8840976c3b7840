package index

import "math"

// Portable distance kernels. The amd64 build replaces the dispatching
// functions dot, l2sq and dotI8 (distance_amd64.go) with versions that call
// the AVX2+FMA assembly when the CPU has it; every other build uses these
// loops directly (distance_other.go).

// dotGeneric returns sum(a[i]*b[i]). b must be at least as long as a.
func dotGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa := a[i : i+8 : i+8]
		bb := b[i : i+8 : i+8]
		s0 += aa[0]*bb[0] + aa[4]*bb[4]
		s1 += aa[1]*bb[1] + aa[5]*bb[5]
		s2 += aa[2]*bb[2] + aa[6]*bb[6]
		s3 += aa[3]*bb[3] + aa[7]*bb[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// l2sqGeneric returns sum((a[i]-b[i])^2). b must be at least as long as a.
func l2sqGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa := a[i : i+8 : i+8]
		bb := b[i : i+8 : i+8]
		d0, d1, d2, d3 := aa[0]-bb[0], aa[1]-bb[1], aa[2]-bb[2], aa[3]-bb[3]
		d4, d5, d6, d7 := aa[4]-bb[4], aa[5]-bb[5], aa[6]-bb[6], aa[7]-bb[7]
		s0 += d0*d0 + d4*d4
		s1 += d1*d1 + d5*d5
		s2 += d2*d2 + d6*d6
		s3 += d3*d3 + d7*d7
	}
	for ; i < len(a); i++ {
		d := a[i] - b[i]
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// dotI8Generic returns sum(a[i]*float32(b[i])): the asymmetric product of a
// float32 query with an int8 code. b must be at least as long as a.
func dotI8Generic(a []float32, b []int8) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa := a[i : i+8 : i+8]
		bb := b[i : i+8 : i+8]
		s0 += aa[0]*float32(bb[0]) + aa[4]*float32(bb[4])
		s1 += aa[1]*float32(bb[1]) + aa[5]*float32(bb[5])
		s2 += aa[2]*float32(bb[2]) + aa[6]*float32(bb[6])
		s3 += aa[3]*float32(bb[3]) + aa[7]*float32(bb[7])
	}
	for ; i < len(a); i++ {
		s0 += a[i] * float32(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// Batched forms: out[i] is the kernel of q and row ids[i] (len(q) wide).

func dotBatchGeneric(q, vecs []float32, ids []uint32, out []float32) {
	d := len(q)
	out = out[:len(ids)]
	for i, id := range ids {
		o := int(id) * d
		out[i] = dot(q, vecs[o:o+d])
	}
}

func l2sqBatchGeneric(q, vecs []float32, ids []uint32, out []float32) {
	d := len(q)
	out = out[:len(ids)]
	for i, id := range ids {
		o := int(id) * d
		out[i] = l2sq(q, vecs[o:o+d])
	}
}

func dotI8BatchGeneric(q []float32, codes []int8, ids []uint32, out []float32) {
	d := len(q)
	out = out[:len(ids)]
	for i, id := range ids {
		o := int(id) * d
		out[i] = dotI8(q, codes[o:o+d])
	}
}

// Kernels names the distance kernels in use: "AVX2+FMA" on x86-64 CPUs
// that have them, "portable" otherwise.
func Kernels() string {
	if useAsm {
		return "AVX2+FMA"
	}
	return "portable"
}

// Similarity scores b against a as Search scores an item against its
// query under m: the cosine similarity (0 when either vector is all
// zeros), the dot product, or the negated squared Euclidean distance.
// a and b must have the same length.
func Similarity(m Metric, a, b []float32) float32 {
	if len(a) != len(b) {
		panic("index: Similarity of vectors of different lengths")
	}
	switch m {
	case L2:
		return -l2sq(a, b)
	case Dot:
		return dot(a, b)
	}
	na, nb := dot(a, a), dot(b, b)
	if na == 0 || nb == 0 {
		return 0
	}
	return float32(float64(dot(a, b)) / math.Sqrt(float64(na)*float64(nb)))
}
