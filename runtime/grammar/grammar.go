// Package grammar turns JSON Schemas into GBNF grammars for llama.cpp's
// grammar sampler, so that response_format json_schema (and json_object)
// is enforced token by token rather than hoped for.
//
// Supported: type (object, array, string, number, integer, boolean, null,
// and lists of types), properties with required and additionalProperties,
// items, prefixItems, minItems/maxItems, enum, const, minLength/maxLength,
// formats date, time, date-time and uuid, anyOf/oneOf, allOf of objects,
// and $ref into #/$defs or #/definitions (recursion allowed). Properties
// appear in the order the schema declares them. A schema using something
// else (pattern, numeric bounds are ignored) is refused with an error that
// names it, rather than silently loosened.
package grammar

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// JSONObject is the grammar of response_format {"type": "json_object"}:
// any JSON object.
const JSONObject = `root ::= object
` + primitives

// primitives are the shared rules. Whitespace is allowed once between two
// JSON tokens (after each one) and bounded like llama.cpp's converter: one
// space, or one newline and up to 20 spaces or tabs of indentation. A model
// fond of newlines therefore cannot pad its answer until max_tokens.
const primitives = `value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,4} )?
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
boolean ::= "true" | "false"
null ::= "null"
ws ::= ( " " | "\n" [ \t]{0,20} )?
`

// FromJSONSchema converts a JSON Schema into a GBNF grammar whose root
// rule matches exactly the JSON documents the schema allows (within the
// supported subset).
func FromJSONSchema(schema []byte) (string, error) {
	root, err := decodeOrdered(schema)
	if err != nil {
		return "", fmt.Errorf("schema is not JSON: %w", err)
	}
	c := &converter{root: root, rules: map[string]string{}, refs: map[string]string{}}
	name, err := c.visit(root, "root-value", "#")
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "root ::= %s\n", name)
	keys := make([]string, 0, len(c.rules))
	for k := range c.rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s ::= %s\n", k, c.rules[k])
	}
	sb.WriteString(primitives)
	return sb.String(), nil
}

type converter struct {
	root  any
	rules map[string]string
	refs  map[string]string // $ref -> rule name
	n     int
}

// rule adds a rule with a unique name based on hint and returns the name.
func (c *converter) rule(hint, body string) string {
	name := sanitize(hint)
	if _, taken := c.rules[name]; taken || isPrimitive(name) {
		c.n++
		name = fmt.Sprintf("%s-%d", name, c.n)
	}
	c.rules[name] = body
	return name
}

func isPrimitive(n string) bool {
	switch n {
	case "root", "value", "object", "array", "string", "char", "number", "integer", "boolean", "null", "ws":
		return true
	}
	return false
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		out = "r"
	}
	if len(out) > 40 {
		out = out[:40]
	}
	return out
}

// Literal is a GBNF string literal matching s exactly.
func Literal(s string) string { return literal(s) }

// literal is a GBNF string literal matching s exactly.
func literal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\x%02X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// jsonLiteral is the grammar of one fixed JSON value.
func jsonLiteral(v any) (string, error) {
	b, err := json.Marshal(stripOrder(v))
	if err != nil {
		return "", err
	}
	return literal(string(b)), nil
}

func (c *converter) visit(s any, hint, path string) (string, error) {
	switch v := s.(type) {
	case bool:
		if v {
			return "value", nil
		}
		return "", fmt.Errorf("%s: schema false matches nothing", path)
	case map[string]any:
		return c.visitObject(v, hint, path)
	}
	return "", fmt.Errorf("%s: a schema must be an object or a boolean", path)
}

var supported = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true, "items": true, "prefixItems": true,
	"minItems": true, "maxItems": true, "enum": true, "const": true, "minLength": true, "maxLength": true, "format": true,
	"anyOf": true, "oneOf": true, "allOf": true, "$ref": true, "$defs": true, "definitions": true,
	// Annotations and bounds that do not change the grammar.
	"title": true, "description": true, "default": true, "examples": true, "$schema": true, "$id": true, "$comment": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true,
	"strict": true, "nullable": true, "readOnly": true, "writeOnly": true, "deprecated": true, "uniqueItems": true,
}

func (c *converter) visitObject(s map[string]any, hint, path string) (string, error) {
	for k := range s {
		if k != orderKey && !supported[k] {
			return "", fmt.Errorf("%s: %q is not supported by the grammar converter", path, k)
		}
	}
	if ref, ok := s["$ref"].(string); ok {
		return c.visitRef(ref, path)
	}
	if cv, ok := s["const"]; ok {
		lit, err := jsonLiteral(cv)
		if err != nil {
			return "", err
		}
		return c.rule(hint+"-const", lit), nil
	}
	if ev, ok := s["enum"].([]any); ok {
		if len(ev) == 0 {
			return "", fmt.Errorf("%s: empty enum", path)
		}
		alts := make([]string, len(ev))
		for i, e := range ev {
			lit, err := jsonLiteral(e)
			if err != nil {
				return "", err
			}
			alts[i] = lit
		}
		return c.rule(hint+"-enum", strings.Join(alts, " | ")), nil
	}
	for _, key := range []string{"anyOf", "oneOf"} {
		if list, ok := s[key].([]any); ok {
			var alts []string
			for i, sub := range list {
				r, err := c.visit(sub, fmt.Sprintf("%s-%d", hint, i), fmt.Sprintf("%s/%s/%d", path, key, i))
				if err != nil {
					return "", err
				}
				alts = append(alts, r)
			}
			return c.rule(hint, strings.Join(alts, " | ")), nil
		}
	}
	if list, ok := s["allOf"].([]any); ok {
		merged, err := c.mergeAllOf(s, list, path)
		if err != nil {
			return "", err
		}
		return c.visitObject(merged, hint, path)
	}
	nullable, _ := s["nullable"].(bool)
	var types []string
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			if str, ok := x.(string); ok {
				types = append(types, str)
			}
		}
	case nil:
		switch {
		case s["properties"] != nil || s["additionalProperties"] != nil:
			types = []string{"object"}
		case s["items"] != nil || s["prefixItems"] != nil:
			types = []string{"array"}
		default:
			return "value", nil
		}
	}
	if nullable {
		types = append(types, "null")
	}
	var alts []string
	for _, t := range types {
		r, err := c.visitType(t, s, hint, path)
		if err != nil {
			return "", err
		}
		alts = append(alts, r)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return c.rule(hint, strings.Join(alts, " | ")), nil
}

func (c *converter) visitRef(ref, path string) (string, error) {
	if name, ok := c.refs[ref]; ok {
		return name, nil
	}
	var target any
	for _, prefix := range []string{"#/$defs/", "#/definitions/"} {
		if key, ok := strings.CutPrefix(ref, prefix); ok {
			if rm, ok := c.root.(map[string]any); ok {
				if defs, ok := rm[strings.TrimSuffix(strings.TrimPrefix(prefix, "#/"), "/")].(map[string]any); ok {
					target = defs[key]
				}
			}
		}
	}
	if ref == "#" {
		target = c.root
	}
	if target == nil {
		return "", fmt.Errorf("%s: $ref %q does not resolve (only #, #/$defs/... and #/definitions/... are supported)", path, ref)
	}
	// Reserve the name first so recursive references resolve to it.
	name := c.rule("ref-"+ref[strings.LastIndex(ref, "/")+1:], "")
	c.refs[ref] = name
	body, err := c.visit(target, name+"-body", ref)
	if err != nil {
		return "", err
	}
	c.rules[name] = body
	return name, nil
}

func (c *converter) mergeAllOf(s map[string]any, list []any, path string) (map[string]any, error) {
	merged := map[string]any{"type": "object"}
	props := map[string]any{}
	var order []any
	var required []any
	add := func(m map[string]any) error {
		if t, ok := m["type"]; ok && t != "object" {
			return fmt.Errorf("%s: allOf is supported for objects only", path)
		}
		if p, ok := m["properties"].(map[string]any); ok {
			for _, k := range orderedKeys(m, "properties") {
				props[k] = p[k]
				order = append(order, k)
			}
		}
		if r, ok := m["required"].([]any); ok {
			required = append(required, r...)
		}
		if ap, ok := m["additionalProperties"]; ok {
			merged["additionalProperties"] = ap
		}
		return nil
	}
	for _, sub := range list {
		m, ok := sub.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: allOf items must be objects", path)
		}
		if ref, ok := m["$ref"].(string); ok {
			r, err := c.deref(ref)
			if err != nil {
				return nil, err
			}
			m = r
		}
		if err := add(m); err != nil {
			return nil, err
		}
	}
	rest := map[string]any{}
	for k, v := range s {
		if k != "allOf" {
			rest[k] = v
		}
	}
	if err := add(rest); err != nil {
		return nil, err
	}
	var names []string
	for _, k := range order {
		names = append(names, k.(string))
	}
	props[orderKey] = names
	merged["properties"] = props
	merged["required"] = required
	return merged, nil
}

func (c *converter) deref(ref string) (map[string]any, error) {
	rm, _ := c.root.(map[string]any)
	for _, prefix := range []string{"#/$defs/", "#/definitions/"} {
		if key, ok := strings.CutPrefix(ref, prefix); ok {
			defs, _ := rm[strings.TrimSuffix(strings.TrimPrefix(prefix, "#/"), "/")].(map[string]any)
			if m, ok := defs[key].(map[string]any); ok {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("$ref %q does not resolve", ref)
}

// orderKey holds, in every decoded object, its keys in document order.
const orderKey = "\x00order"

// decodeOrdered decodes JSON like json.Unmarshal into any, but records each
// object's key order under orderKey.
func decodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("extra data after the schema")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			var order []string
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				if _, dup := m[k]; !dup {
					order = append(order, k)
				}
				m[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			m[orderKey] = order
			return m, nil
		case '[':
			var a []any
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			if a == nil {
				a = []any{}
			}
			return a, nil
		}
	case json.Number:
		f, err := t.Float64()
		return f, err
	}
	return tok, nil
}

// orderedKeys returns the keys of s[field] in document order.
func orderedKeys(s map[string]any, field string) []string {
	p, _ := s[field].(map[string]any)
	if o, ok := p[orderKey].([]string); ok {
		return o
	}
	out := make([]string, 0, len(p))
	for k := range p {
		if k != orderKey {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (c *converter) visitType(t string, s map[string]any, hint, path string) (string, error) {
	switch t {
	case "string":
		return c.visitString(s, hint, path)
	case "number":
		return "number", nil
	case "integer":
		return "integer", nil
	case "boolean":
		return "boolean", nil
	case "null":
		return "null", nil
	case "array":
		return c.visitArray(s, hint, path)
	case "object":
		return c.visitProps(s, hint, path)
	}
	return "", fmt.Errorf("%s: unknown type %q", path, t)
}

func intField(s map[string]any, k string) (int, bool) {
	f, ok := s[k].(float64)
	if !ok || f < 0 || f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

func (c *converter) visitString(s map[string]any, hint, path string) (string, error) {
	if f, ok := s["format"].(string); ok {
		d2, d4 := "[0-9]{2}", "[0-9]{4}"
		var body string
		switch f {
		case "date":
			body = d4 + ` "-" ` + d2 + ` "-" ` + d2
		case "time":
			body = d2 + ` ":" ` + d2 + ` ":" ` + d2 + ` ( "." [0-9]{1,6} )? ( "Z" | [-+] ` + d2 + ` ":" ` + d2 + ` )?`
		case "date-time":
			body = d4 + ` "-" ` + d2 + ` "-" ` + d2 + ` "T" ` + d2 + ` ":" ` + d2 + ` ":" ` + d2 + ` ( "." [0-9]{1,6} )? ( "Z" | [-+] ` + d2 + ` ":" ` + d2 + ` )`
		case "uuid":
			h := "[0-9a-fA-F]"
			body = h + "{8} \"-\" " + h + "{4} \"-\" " + h + "{4} \"-\" " + h + "{4} \"-\" " + h + "{12}"
		default:
			return "", fmt.Errorf("%s: string format %q is not supported (date, time, date-time, uuid are)", path, f)
		}
		return c.rule(hint+"-"+f, `"\"" `+body+` "\""`), nil
	}
	lo, hasLo := intField(s, "minLength")
	hi, hasHi := intField(s, "maxLength")
	if !hasLo && !hasHi {
		return "string", nil
	}
	rep := fmt.Sprintf("{%d,}", lo)
	if hasHi {
		if hi < lo {
			return "", fmt.Errorf("%s: maxLength %d < minLength %d", path, hi, lo)
		}
		rep = fmt.Sprintf("{%d,%d}", lo, hi)
	}
	return c.rule(hint+"-string", `"\"" char`+rep+` "\""`), nil
}

func (c *converter) visitArray(s map[string]any, hint, path string) (string, error) {
	var prefix []string
	if pi, ok := s["prefixItems"].([]any); ok {
		for i, sub := range pi {
			r, err := c.visit(sub, fmt.Sprintf("%s-%d", hint, i), fmt.Sprintf("%s/prefixItems/%d", path, i))
			if err != nil {
				return "", err
			}
			prefix = append(prefix, r)
		}
	}
	item := "value"
	noMore := false
	if it, ok := s["items"]; ok {
		if b, isBool := it.(bool); isBool && !b {
			noMore = true
		} else {
			r, err := c.visit(it, hint+"-item", path+"/items")
			if err != nil {
				return "", err
			}
			item = r
		}
	}
	lo, _ := intField(s, "minItems")
	hi, hasHi := intField(s, "maxItems")
	if hasHi && hi < lo {
		return "", fmt.Errorf("%s: maxItems %d < minItems %d", path, hi, lo)
	}
	// Every element is followed by its whitespace, so there is one ws
	// between any two tokens.
	var seq []string
	for i, p := range prefix {
		if i > 0 {
			seq = append(seq, `"," ws`)
		}
		seq = append(seq, p+" ws")
	}
	if len(prefix) > 0 {
		body := `"[" ws ` + strings.Join(seq, " ")
		if !noMore {
			body += ` ( "," ws ` + item + ` ws )*`
		}
		return c.rule(hint+"-tuple", body+` "]"`), nil
	}
	more := "*"
	if lo > 1 || hasHi {
		min := max(lo-1, 0)
		if hasHi {
			if hi == 0 {
				return c.rule(hint+"-empty", `"[" ws "]"`), nil
			}
			more = fmt.Sprintf("{%d,%d}", min, hi-1)
		} else {
			more = fmt.Sprintf("{%d,}", min)
		}
	}
	body := item + ` ws ( "," ws ` + item + ` ws )` + more
	if lo == 0 {
		body = "( " + body + " )?"
	}
	return c.rule(hint+"-array", `"[" ws `+body+` "]"`), nil
}

func (c *converter) visitProps(s map[string]any, hint, path string) (string, error) {
	props, _ := s["properties"].(map[string]any)
	keys := orderedKeys(s, "properties")
	required := map[string]bool{}
	if r, ok := s["required"].([]any); ok {
		for _, x := range r {
			if k, ok := x.(string); ok {
				if _, declared := props[k]; !declared {
					return "", fmt.Errorf("%s: required property %q is not declared", path, k)
				}
				required[k] = true
			}
		}
	}
	extra := ""
	switch ap := s["additionalProperties"].(type) {
	case bool:
		if ap {
			extra = "value"
		}
	case map[string]any:
		r, err := c.visit(ap, hint+"-extra", path+"/additionalProperties")
		if err != nil {
			return "", err
		}
		extra = r
	case nil:
		if len(props) == 0 {
			extra = "value"
		}
	}
	kv := make([]string, len(keys))
	for i, k := range keys {
		r, err := c.visit(props[k], hint+"-"+k, path+"/properties/"+k)
		if err != nil {
			return "", err
		}
		kv[i] = c.rule(hint+"-"+k+"-kv", literal(mustJSON(k))+` ws ":" ws `+r+` ws`)
	}
	// T[i]: members from property i on, after something was emitted;
	// F[i]: the same when nothing was emitted yet (no leading comma).
	n := len(keys)
	tail := `""`
	first := `""`
	if extra != "" {
		gen := `string ws ":" ws ` + extra + ` ws`
		tail = c.rule(hint+"-extra-tail", `( "," ws `+gen+` )*`)
		first = c.rule(hint+"-extra-first", `( `+gen+` `+tail+` )?`)
	}
	T := make([]string, n+1)
	F := make([]string, n+1)
	T[n], F[n] = tail, first
	for i := n - 1; i >= 0; i-- {
		k := keys[i]
		if required[k] {
			T[i] = c.rule(fmt.Sprintf("%s-t%d", hint, i), `"," ws `+kv[i]+` `+T[i+1])
			F[i] = c.rule(fmt.Sprintf("%s-f%d", hint, i), kv[i]+` `+T[i+1])
		} else {
			T[i] = c.rule(fmt.Sprintf("%s-t%d", hint, i), `( "," ws `+kv[i]+` )? `+T[i+1])
			F[i] = c.rule(fmt.Sprintf("%s-f%d", hint, i), kv[i]+` `+T[i+1]+` | `+F[i+1])
		}
	}
	return c.rule(hint+"-object", `"{" ws `+F[0]+` "}"`), nil
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// stripOrder removes the recorded key order before re-encoding a value.
func stripOrder(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if k != orderKey {
				out[k] = stripOrder(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = stripOrder(x)
		}
		return out
	}
	return v
}
