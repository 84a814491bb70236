package config

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The decoder fills the Config from the generic map toml.Decode produces.
// It is driven by the struct types and their `toml` tags, so a new key is
// a new tagged field; and unlike toml.Decode into structs it keeps going
// after a bad value, names the key path and finds its line.
//
// Supported field types: string, bool, int kinds, float64, time.Duration
// (a string such as "5s"), []string (a list, or one string), map[string]string,
// structs (tables), []*struct (arrays of tables), and types with a form of
// their own that implement valueDecoder (StatusRanges). Others panic: they
// are programming errors, caught by TestGoodFiles (good-full.toml sets
// every key).
//
// Before a struct is decoded its setDefaults method, if any, runs, so that
// an absent key keeps the default and a present one, even zero or false,
// replaces it; after, its lateDefaults method, if any, fills in defaults
// that depend on other keys. A struct decoded from a table gets the table's
// line in an int field named Line tagged `toml:"-"`, if it has one.
type decoder struct {
	*problems
	// paths holds the path of each struct decoded from an array of tables,
	// by pointer, so that validate reports at the right line even when a
	// non-table element was skipped and indexes no longer match.
	paths map[any]path
	// given holds the indexed path of every key present in the file, so
	// that validate can tell a key set to its default from an absent one.
	given map[string]bool
}

// defaulter is implemented by structs whose zero value is not their default.
type defaulter interface{ setDefaults() }

// lateDefaulter is implemented by structs with a default that depends on
// another key's value; given reports whether the table held a key.
type lateDefaulter interface {
	lateDefaults(given func(key string) bool)
}

// valueDecoder is implemented by field types with a TOML form of their own.
// decodeTOML sets the value from raw, or leaves it alone (its default) and
// calls bad for each thing wrong: elem is the index of the offending array
// element, or -1 for the value as a whole.
type valueDecoder interface {
	decodeTOML(raw any, bad func(elem int, msg string))
}

// labeler is implemented by elements of arrays of tables that have a name
// to show in problem messages; label returns it quoted, or "".
type labeler interface{ label() string }

var durationType = reflect.TypeFor[time.Duration]()

// path is where a value sits in the document, for problem reports.
type path []step

type step struct {
	key   string
	index int           // position in the array at key; -1 if not an element
	label func() string // names the element; nil if not a table in an array
}

// with returns p extended by a table key.
func (p path) with(key string) path {
	return append(p[:len(p):len(p)], step{key: key, index: -1})
}

// elem returns p's array element i, named by label (which may be nil).
func (p path) elem(i int, label func() string) path {
	q := append(path(nil), p...)
	q[len(q)-1].index = i
	q[len(q)-1].label = label
	return q
}

// indexed renders the path as locate does: "virtual_service.1.listen".
func (p path) indexed() string {
	var b strings.Builder
	for _, s := range p {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.key)
		if s.index >= 0 {
			b.WriteByte('.')
			b.WriteString(strconv.Itoa(s.index))
		}
	}
	return b.String()
}

// key renders the path without indexes: "virtual_service.listen".
func (p path) key() string {
	keys := make([]string, len(p))
	for i, s := range p {
		keys[i] = s.key
	}
	return strings.Join(keys, ".")
}

// where names the tables in arrays on the path:
// `virtual_service "web", real_server "web1"`, or `virtual_service #2`
// for one with no name yet.
func (p path) where() string {
	var parts []string
	for _, s := range p {
		if s.label == nil {
			continue
		}
		l := s.label()
		if l == "" {
			l = "#" + strconv.Itoa(s.index+1)
		}
		parts = append(parts, s.key+" "+l)
	}
	return strings.Join(parts, ", ")
}

// table decodes m into the struct ptr points to.
func (d *decoder) table(p path, m map[string]any, ptr any) {
	d.structValue(p, m, reflect.ValueOf(ptr).Elem())
}

func (d *decoder) structValue(p path, m map[string]any, v reflect.Value) {
	if dv, ok := v.Addr().Interface().(defaulter); ok {
		dv.setDefaults()
	}
	t := v.Type()
	if f, ok := t.FieldByName("Line"); ok && f.Type.Kind() == reflect.Int && tomlKey(f) == "" {
		v.FieldByIndex(f.Index).SetInt(int64(d.line(p)))
	}
	var known []string
	for i := range t.NumField() {
		key := tomlKey(t.Field(i))
		if key == "" {
			continue
		}
		known = append(known, key)
		fv := v.Field(i)
		raw, ok := m[key]
		if !ok {
			// An absent table still gets its defaults.
			if fv.Kind() == reflect.Struct {
				d.structValue(p.with(key), nil, fv)
			}
			continue
		}
		d.given[p.with(key).indexed()] = true
		d.value(p.with(key), raw, fv)
	}
	if lv, ok := v.Addr().Interface().(lateDefaulter); ok {
		lv.lateDefaults(func(key string) bool { _, ok := m[key]; return ok })
	}
	// Sorted so that problems on one line come out in a stable order.
	unknown := make([]string, 0, len(m))
	for key := range m {
		if !slices.Contains(known, key) {
			unknown = append(unknown, key)
		}
	}
	sort.Strings(unknown)
	for _, key := range unknown {
		if s := closest(key, known); s != "" {
			d.add(p.with(key), "unknown key %q (did you mean %q?)", key, s)
		} else {
			d.add(p.with(key), "unknown key %q", key)
		}
	}
}

// tomlKey returns a field's key, or "" for fields not in the file.
func tomlKey(f reflect.StructField) string {
	key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if !f.IsExported() || key == "-" {
		return ""
	}
	return key
}

// value decodes one TOML value into v, reporting a mismatch at p and leaving
// v (its default) alone.
func (d *decoder) value(p path, raw any, v reflect.Value) {
	if v.Type() == durationType {
		d.duration(p, raw, v)
		return
	}
	if vd, ok := v.Addr().Interface().(valueDecoder); ok {
		vd.decodeTOML(raw, func(elem int, msg string) {
			at := p
			if elem >= 0 {
				at = p.elem(elem, nil)
			}
			d.add(at, "%s", msg)
		})
		return
	}
	switch v.Kind() {
	case reflect.String:
		if s, ok := raw.(string); ok {
			v.SetString(s)
			return
		}
		d.add(p, "expected string, got %s", describe(raw))
	case reflect.Bool:
		if b, ok := raw.(bool); ok {
			v.SetBool(b)
			return
		}
		d.add(p, "expected boolean (true or false), got %s", describe(raw))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			d.add(p, "expected integer, got %s", describe(raw))
			return
		}
		if v.OverflowInt(n) {
			d.add(p, "integer %d is out of range", n)
			return
		}
		v.SetInt(n)
	case reflect.Float64:
		switch f := raw.(type) {
		case float64:
			v.SetFloat(f)
		case int64:
			v.SetFloat(float64(f))
		default:
			d.add(p, "expected number, got %s", describe(raw))
		}
	case reflect.Slice:
		d.slice(p, raw, v)
	case reflect.Map:
		d.stringMap(p, raw, v)
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			d.add(p, "expected table ([%s]), got %s", p.key(), describe(raw))
			// Keep its defaults, as for any other mistyped value.
		}
		d.structValue(p, m, v)
	default:
		panic("config: unsupported field type " + v.Type().String())
	}
}

// duration decodes a string such as "1m30s". Bare numbers are refused
// rather than guessed at: 5 could mean seconds or nanoseconds.
func (d *decoder) duration(p path, raw any, v reflect.Value) {
	s, ok := raw.(string)
	if !ok {
		d.add(p, "expected a duration string such as \"5s\", got %s", describe(raw))
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.add(p, "expected a duration such as \"5s\", \"250ms\" or \"1m30s\", got %q", s)
		return
	}
	if dur < 0 {
		d.add(p, "must not be negative, got %q", s)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) slice(p path, raw any, v reflect.Value) {
	et := v.Type().Elem()
	switch {
	case et.Kind() == reflect.String:
		d.strings(p, raw, v)
	case et.Kind() == reflect.Pointer && et.Elem().Kind() == reflect.Struct:
		d.tables(p, raw, v)
	default:
		panic("config: unsupported field type " + v.Type().String())
	}
}

// strings decodes a list of strings; one string stands for a list of one,
// as in listen = "127.0.0.1:80".
func (d *decoder) strings(p path, raw any, v reflect.Value) {
	var list []any
	switch r := raw.(type) {
	case string:
		list = []any{r}
	case []any:
		list = r
	default:
		d.add(p, "expected string or array of strings, got %s", describe(raw))
		return
	}
	// Keep the strings among the elements, so that they are still
	// validated and an empty list is not reported on top.
	out := reflect.MakeSlice(v.Type(), 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			d.add(p.elem(i, nil), "expected string, got %s", describe(e))
			continue
		}
		out = reflect.Append(out, reflect.ValueOf(s).Convert(v.Type().Elem()))
	}
	v.Set(out)
}

// tables decodes an array of tables, [[key]] or key = [{...}, {...}].
func (d *decoder) tables(p path, raw any, v reflect.Value) {
	var list []any
	switch r := raw.(type) {
	case []map[string]any:
		for _, m := range r {
			list = append(list, m)
		}
	case []any:
		list = r
	default:
		d.add(p, "expected array of tables ([[%s]]), got %s", p.key(), describe(raw))
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(list))
	for i, e := range list {
		elem := reflect.New(v.Type().Elem().Elem())
		label := func() string { return "" }
		if l, ok := elem.Interface().(labeler); ok {
			label = l.label
		}
		ep := p.elem(i, label)
		m, ok := e.(map[string]any)
		if !ok {
			d.add(ep, "expected table, got %s", describe(e))
			continue
		}
		d.structValue(ep, m, elem.Elem())
		d.paths[elem.Interface()] = ep
		out = reflect.Append(out, elem)
	}
	v.Set(out)
}

func (d *decoder) stringMap(p path, raw any, v reflect.Value) {
	if v.Type().Key().Kind() != reflect.String || v.Type().Elem().Kind() != reflect.String {
		panic("config: unsupported field type " + v.Type().String())
	}
	m, ok := raw.(map[string]any)
	if !ok {
		d.add(p, "expected table of strings, got %s", describe(raw))
		return
	}
	out := reflect.MakeMapWithSize(v.Type(), len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s, ok := m[k].(string)
		if !ok {
			d.add(p.with(k), "expected string, got %s", describe(m[k]))
			continue
		}
		out.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), reflect.ValueOf(s).Convert(v.Type().Elem()))
	}
	v.Set(out)
}

// describe names a decoded TOML value's type, with the value when short:
// `string "abc"`, `integer 5`.
func describe(raw any) string {
	switch r := raw.(type) {
	case string:
		if len(r) > 40 {
			r = r[:37] + "..."
		}
		return fmt.Sprintf("string %q", r)
	case int64:
		return fmt.Sprintf("integer %d", r)
	case float64:
		return fmt.Sprintf("float %v", r)
	case bool:
		return fmt.Sprintf("boolean %t", r)
	case time.Time:
		return "date-time " + r.Format(time.RFC3339Nano)
	case []any:
		return "array"
	case []map[string]any:
		return "array of tables"
	case map[string]any:
		return "table"
	default:
		return fmt.Sprintf("%T", raw)
	}
}

// closest returns the candidate nearest to s if it is a likely typo: at most
// two edits away and fewer edits than s has bytes.
func closest(s string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestDist && d < len(s) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of adjacent bytes, the usual typos.
func editDistance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
