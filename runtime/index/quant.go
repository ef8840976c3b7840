package index

import "math"

// quantize writes v's int8 code to dst (one symmetric scale per vector:
// v[i] ~= scale*dst[i], |dst[i]| <= 127) and returns the scale and the
// squared norm of the decoded vector (used by quantised L2 distances).
func quantize(dst []int8, v []float32) (scale, norm2 float32) {
	var maxAbs float32
	for _, x := range v {
		maxAbs = max(maxAbs, float32(math.Abs(float64(x))))
	}
	if maxAbs == 0 {
		clear(dst)
		return 0, 0
	}
	inv := 127 / float64(maxAbs)
	var n2 int64
	for i, x := range v {
		c := int64(math.Round(float64(x) * inv))
		c = max(-127, min(127, c))
		dst[i] = int8(c)
		n2 += c * c
	}
	scale = maxAbs / 127
	return scale, scale * scale * float32(n2)
}
