package config

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// locate maps the key paths of a TOML document to the lines they are on,
// because BurntSushi/toml does not expose key positions and a problem report
// without a line is hard to act on.
//
// A path joins keys and array indexes with dots:
// "virtual_service.1.real_server.0.weight" is the weight key of the first
// [[virtual_service.real_server]] of the second [[virtual_service]]. Tables
// map to their header's line ("virtual_service.1", "virtual_service.1.timeouts"),
// keys to the line their name is on, and elements of arrays (inline or of
// tables) to the line they start on.
//
// The scan is only as strict as it must be to stay in step with the
// document: it runs after toml.Decode has accepted the text, and on text it
// does not understand it records less rather than failing. It never reads
// past the end of data and always makes progress.
func locate(data []byte) map[string]int {
	s := &scanner{
		src:    strings.TrimPrefix(string(data), "\uFEFF"),
		line:   1,
		lines:  make(map[string]int),
		arrays: make(map[string]int),
	}
	s.document()
	return s.lines
}

type scanner struct {
	src   string
	pos   int
	line  int
	lines map[string]int
	// arrays counts the elements seen so far of each array of tables, by
	// path, so that a header resolves to its newest element (TOML 1.0.0
	// "Array of Tables": a sub-table header belongs to the most recently
	// defined element).
	arrays map[string]int
}

func (s *scanner) eof() bool { return s.pos >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

func (s *scanner) hasPrefix(p string) bool { return strings.HasPrefix(s.src[s.pos:], p) }

// advance consumes n bytes, counting the newlines among them.
func (s *scanner) advance(n int) {
	n = min(n, len(s.src)-s.pos)
	s.line += strings.Count(s.src[s.pos:s.pos+n], "\n")
	s.pos += n
}

// skipSpace skips blanks and, if newlines is set, newlines and comments too.
func (s *scanner) skipSpace(newlines bool) {
	for !s.eof() {
		switch c := s.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			s.pos++
		case newlines && c == '\n':
			s.advance(1)
		case newlines && c == '#':
			s.skipLine()
		default:
			return
		}
	}
}

// skipLine skips to the start of the next line (past a comment or, on text
// the scanner does not follow, anything else).
func (s *scanner) skipLine() {
	if i := strings.IndexByte(s.src[s.pos:], '\n'); i >= 0 {
		s.advance(i + 1)
		return
	}
	s.pos = len(s.src)
}

func (s *scanner) record(path string, line int) {
	if path != "" {
		s.lines[path] = line
	}
}

// document scans top-level lines: table headers and key/value pairs.
func (s *scanner) document() {
	table := "" // path of the current table; "" is the root
	for {
		s.skipSpace(true)
		if s.eof() {
			return
		}
		start := s.pos
		switch {
		case s.hasPrefix("[["):
			s.advance(2)
			keys := s.key()
			table = s.arrayTable(keys)
		case s.peek() == '[':
			s.advance(1)
			keys := s.key()
			table = s.resolve(keys)
			s.record(table, s.line)
		default:
			s.keyValue(table)
		}
		// Whatever follows on the line is a comment, a closing bracket, or
		// text we could not follow; none of it holds keys.
		if s.pos == start || s.peek() != '\n' {
			s.skipLine()
		}
	}
}

// resolve turns a header's keys into a path, giving every array of tables on
// the way its newest element's index.
func (s *scanner) resolve(keys []string) string {
	path := ""
	for _, k := range keys {
		path = join(path, k)
		if n := s.arrays[path]; n > 0 {
			path = join(path, strconv.Itoa(n-1))
		}
	}
	return path
}

// arrayTable handles a [[header]]: it appends an element to the array and
// returns the element's path.
func (s *scanner) arrayTable(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	array := join(s.resolve(keys[:len(keys)-1]), keys[len(keys)-1])
	n := s.arrays[array]
	s.arrays[array] = n + 1
	if n == 0 {
		s.record(array, s.line)
	}
	elem := join(array, strconv.Itoa(n))
	s.record(elem, s.line)
	return elem
}

// keyValue scans "key = value" in table (or in an inline table at path
// table).
func (s *scanner) keyValue(table string) {
	line := s.line
	keys := s.key()
	if len(keys) == 0 {
		return
	}
	path := table
	for i, k := range keys {
		path = join(path, k)
		// Dotted keys define the tables on the way; keep an earlier,
		// explicit definition.
		if _, ok := s.lines[path]; !ok || i == len(keys)-1 {
			s.record(path, line)
		}
	}
	s.skipSpace(false)
	if s.peek() != '=' {
		return
	}
	s.advance(1)
	s.skipSpace(false)
	s.value(path)
}

// key scans a possibly dotted key made of bare and quoted parts, and the
// closing brackets of a header if any.
func (s *scanner) key() []string {
	var keys []string
	for {
		s.skipSpace(false)
		var k string
		switch c := s.peek(); {
		case c == '"':
			raw := s.basicString()
			k = unquote(raw)
		case c == '\'':
			raw := s.literalString()
			k = strings.Trim(raw, "'")
		case isBare(c):
			start := s.pos
			for !s.eof() && isBare(s.peek()) {
				s.pos++
			}
			k = s.src[start:s.pos]
		default:
			return keys
		}
		keys = append(keys, k)
		s.skipSpace(false)
		if s.peek() != '.' {
			break
		}
		s.advance(1)
	}
	s.skipSpace(false)
	for s.peek() == ']' {
		s.advance(1)
	}
	return keys
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value scans one value at path, recording the elements of arrays and the
// keys of inline tables.
func (s *scanner) value(path string) {
	switch c := s.peek(); {
	case s.hasPrefix(`"""`):
		s.multiline(`"""`)
	case s.hasPrefix(`'''`):
		s.multiline(`'''`)
	case c == '"':
		s.basicString()
	case c == '\'':
		s.literalString()
	case c == '[':
		s.advance(1)
		s.array(path)
	case c == '{':
		s.advance(1)
		s.inlineTable(path)
	default:
		s.scalar()
	}
}

// array scans the elements of an inline array, which may span lines, up to
// and including its closing bracket.
func (s *scanner) array(path string) {
	for i := 0; ; i++ {
		s.skipSpace(true)
		if s.eof() || s.peek() == ']' {
			s.advance(1)
			return
		}
		start := s.pos
		elem := join(path, strconv.Itoa(i))
		s.record(elem, s.line)
		s.value(elem)
		s.skipSpace(true)
		if s.peek() == ',' {
			s.advance(1)
		} else if s.pos == start {
			s.advance(1) // not a value we know; step over it
		}
	}
}

// inlineTable scans key/value pairs up to and including the closing brace.
// TOML 1.1 (which BurntSushi/toml v1.6 accepts) lets them span lines.
func (s *scanner) inlineTable(path string) {
	for {
		s.skipSpace(true)
		if s.eof() || s.peek() == '}' {
			s.advance(1)
			return
		}
		start := s.pos
		s.keyValue(path)
		s.skipSpace(true)
		if s.peek() == ',' {
			s.advance(1)
		} else if s.pos == start {
			s.advance(1)
		}
	}
}

// basicString scans a one-line "string" and returns it with its quotes.
func (s *scanner) basicString() string {
	start := s.pos
	s.pos++ // opening quote
	for !s.eof() {
		switch s.peek() {
		case '\\':
			// Step over the escaped byte, but never over a newline, which
			// would end the string (and must be counted).
			if s.pos+1 < len(s.src) && s.src[s.pos+1] != '\n' {
				s.pos++
			}
		case '"':
			s.pos++
			return s.src[start:s.pos]
		case '\n':
			return s.src[start:s.pos]
		}
		s.pos++
	}
	return s.src[start:s.pos]
}

// literalString scans a one-line 'string' and returns it with its quotes.
func (s *scanner) literalString() string {
	start := s.pos
	s.pos++
	if i := strings.IndexAny(s.src[s.pos:], "'\n"); i >= 0 {
		s.pos += i
		if s.src[s.pos] == '\'' {
			s.pos++
		}
	} else {
		s.pos = len(s.src)
	}
	return s.src[start:s.pos]
}

// multiline scans a multi-line basic or literal string, which may hold
// newlines, # and =; delim is its triple quote.
func (s *scanner) multiline(delim string) {
	s.advance(len(delim))
	for !s.eof() {
		if delim == `"""` && s.peek() == '\\' {
			s.advance(2)
			continue
		}
		if s.hasPrefix(delim) {
			s.advance(len(delim))
			// Up to two quotes may end the content right before the
			// delimiter (TOML 1.0.0 "String": """a"""" is `a"`).
			for range 2 {
				if s.peek() == delim[0] {
					s.advance(1)
				}
			}
			return
		}
		s.advance(1)
	}
}

// scalar scans a number, boolean or date-time.
func (s *scanner) scalar() {
	start := s.pos
	for !s.eof() {
		c := s.peek()
		// A date and a time may be separated by a space (RFC 3339 §5.6
		// as TOML allows it): "1979-05-27 07:32:00Z".
		if c == ' ' && s.pos-start == 10 && s.src[start+4] == '-' && s.pos+1 < len(s.src) && isDigit(s.src[s.pos+1]) {
			s.pos++
			continue
		}
		if c == ',' || c == ']' || c == '}' || c == '#' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			return
		}
		s.pos++
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// unquote decodes a quoted basic-string key so that its path matches the
// decoded document's key. It falls back to the text between the quotes for
// escapes Go does not share with TOML (\e), which only costs a line number.
func unquote(q string) string {
	if k, err := strconv.Unquote(q); err == nil && utf8.ValidString(k) {
		return k
	}
	return strings.TrimSuffix(strings.TrimPrefix(q, `"`), `"`)
}
