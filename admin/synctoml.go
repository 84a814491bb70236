package admin

import (
	"bytes"
	"errors"
	"fmt"
)

// tomlBlock is a run of a TOML document's text: the keys before the first
// table header (table ""), or one table header with the lines up to the
// next header. table is the header's first key ("ha" for [ha], [ha.x] and
// [[ha.x]]), unquoted.
type tomlBlock struct {
	table string
	text  []byte
}

// splitTables cuts a TOML document into blocks at its table headers
// (TOML v1.0.0 "Table", "Array of Tables"). It knows just enough of the
// syntax to find them: a '[' that starts a line outside any string,
// array or inline table. Concatenating the blocks gives the document back.
func splitTables(doc []byte) ([]tomlBlock, error) {
	var blocks []tomlBlock
	cur := tomlBlock{}
	start := 0
	depth := 0 // open arrays and inline tables
	line := 1
	atLineStart := true
	for i := 0; i < len(doc); {
		c := doc[i]
		if atLineStart {
			if c == ' ' || c == '\t' {
				i++
				continue
			}
			atLineStart = false
			if c == '[' && depth == 0 {
				table, err := headerTable(doc[i:])
				if err != nil {
					return nil, fmt.Errorf("line %d: %w", line, err)
				}
				ls := bytes.LastIndexByte(doc[:i], '\n') + 1
				cur.text = doc[start:ls]
				blocks = append(blocks, cur)
				cur, start = tomlBlock{table: table}, ls
				// The header's line (and any comment on it) is the block's.
				if j := bytes.IndexByte(doc[i:], '\n'); j >= 0 {
					i += j
				} else {
					i = len(doc)
				}
				continue
			}
		}
		switch {
		case c == '\n':
			line++
			atLineStart = true
			i++
		case c == '#':
			if j := bytes.IndexByte(doc[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(doc)
			}
		case c == '"' || c == '\'':
			n, nl, err := skipString(doc[i:])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			i += n
			line += nl
		case c == '[' || c == '{':
			depth++
			i++
		case c == ']' || c == '}':
			depth--
			i++
		default:
			i++
		}
	}
	cur.text = doc[start:]
	return append(blocks, cur), nil
}

// headerTable returns the first key of the table header at the start of h.
func headerTable(h []byte) (string, error) {
	h = bytes.TrimLeft(h, "[ \t")
	if len(h) == 0 {
		return "", errors.New("unterminated table header")
	}
	if h[0] == '"' || h[0] == '\'' {
		end := bytes.IndexByte(h[1:], h[0])
		if end < 0 {
			return "", errors.New("unterminated quoted key in a table header")
		}
		// Escapes in a quoted first key are not decoded: such a table is
		// never one of localTables.
		return string(h[1 : 1+end]), nil
	}
	end := bytes.IndexAny(h, ". \t]")
	if end < 0 {
		return "", errors.New("unterminated table header")
	}
	return string(h[:end]), nil
}

// skipString returns the length of the string literal at the start of s
// (basic, literal, or their multi-line forms) and how many newlines it
// holds.
func skipString(s []byte) (n, newlines int, err error) {
	q := s[0]
	if len(s) >= 3 && s[1] == q && s[2] == q { // multi-line
		delim := s[:3]
		for i := 3; i < len(s); i++ {
			switch {
			case q == '"' && s[i] == '\\':
				if i+1 < len(s) && s[i+1] == '\n' {
					newlines++
				}
				i++
			case s[i] == '\n':
				newlines++
			case bytes.HasPrefix(s[i:], delim):
				// Up to two more quotes may close the string's content
				// (""""" is a quote then the delimiter).
				j := i + 3
				for k := 0; k < 2 && j < len(s) && s[j] == q; k++ {
					j++
				}
				return j, newlines, nil
			}
		}
		return 0, 0, errors.New("unterminated multi-line string")
	}
	for i := 1; i < len(s); i++ {
		switch {
		case q == '"' && s[i] == '\\':
			i++
		case s[i] == '\n':
			return 0, 0, errors.New("unterminated string")
		case s[i] == q:
			return i + 1, 0, nil
		}
	}
	return 0, 0, errors.New("unterminated string")
}
