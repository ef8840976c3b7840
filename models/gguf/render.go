package gguf

import (
	"fmt"
	"strings"
)

// Render formats a metadata value the way llama.cpp's gguf_kv_to_str does
// (numbers as C++ std::to_string, arrays as "[a, b]", string array items
// quoted with \ and " escaped), so values can be compared with what
// llama.cpp reports.
func Render(kv KV) string {
	switch v := kv.Value.(type) {
	case string:
		return v
	case []string:
		parts := make([]string, len(v))
		for i, s := range v {
			s = strings.ReplaceAll(s, `\`, `\\`)
			parts[i] = `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []uint64, []int64, []float32, []float64, []bool:
		var parts []string
		forEach(v, func(x any) { parts = append(parts, renderScalar(x)) })
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return renderScalar(kv.Value)
}

func renderScalar(x any) string {
	switch v := x.(type) {
	case float32:
		return fmt.Sprintf("%f", float64(v))
	case float64:
		return fmt.Sprintf("%f", v)
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	return fmt.Sprint(x)
}

func forEach(v any, f func(any)) {
	switch a := v.(type) {
	case []uint8:
		for _, x := range a {
			f(x)
		}
	case []int8:
		for _, x := range a {
			f(x)
		}
	case []uint16:
		for _, x := range a {
			f(x)
		}
	case []int16:
		for _, x := range a {
			f(x)
		}
	case []uint32:
		for _, x := range a {
			f(x)
		}
	case []int32:
		for _, x := range a {
			f(x)
		}
	case []uint64:
		for _, x := range a {
			f(x)
		}
	case []int64:
		for _, x := range a {
			f(x)
		}
	case []float32:
		for _, x := range a {
			f(x)
		}
	case []float64:
		for _, x := range a {
			f(x)
		}
	case []bool:
		for _, x := range a {
			f(x)
		}
	}
}
