package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	// File is the configuration file's path.
	File string
	// Line is the 1-based line the problem is on; for a missing key, the
	// line of the table that should hold it. Zero when no line applies
	// (a problem with the file as a whole).
	Line int
	// Key is the dotted key path without array indexes
	// ("virtual_service.real_server.weight"); empty for syntax errors.
	Key string
	// Msg says what is wrong and, inside a virtual service or real server,
	// which one: `must be > 0, got 0s (virtual_service "web")`.
	Msg string
}

// Error renders the problem as FILE:LINE: KEY: MSG, leaving out a missing
// key. A problem of the whole file (no line) is put at line 1, so every
// report has the same shape for editors and scripts.
func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	b.WriteString(":")
	b.WriteString(strconv.Itoa(max(p.Line, 1)))
	if p.Key != "" {
		b.WriteString(": ")
		b.WriteString(p.Key)
	}
	b.WriteString(": ")
	b.WriteString(p.Msg)
	return b.String()
}

// Errors holds every problem found in a configuration file, sorted by line.
// Parse and Load return it so that one run shows everything to fix.
type Errors []Problem

// Error renders one problem per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes and validates the configuration file at path. A file
// that cannot be read yields that (wrapped) error, so errors.Is works for
// fs.ErrNotExist; any problem with its content yields Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a configuration held in data; file names it
// in problem reports. On failure it returns a nil Config and Errors with
// every problem found.
func Parse(file string, data []byte) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, Errors{syntaxProblem(file, err)}
	}
	ps := &problems{file: file, lines: locate(data)}
	c := &Config{File: file}
	d := &decoder{problems: ps, paths: make(map[any]path), given: make(map[string]bool)}
	d.table(nil, raw, c)
	validate(d, c)
	if len(ps.list) > 0 {
		sort.SliceStable(ps.list, func(i, j int) bool { return ps.list[i].Line < ps.list[j].Line })
		return nil, Errors(ps.list)
	}
	return c, nil
}

// syntaxProblem turns a TOML syntax error into a Problem. The document is
// unusable past it, so it is the only one reported.
func syntaxProblem(file string, err error) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return Problem{File: file, Line: pe.Position.Line, Msg: "syntax: " + pe.Message}
	}
	return Problem{File: file, Msg: "syntax: " + err.Error()}
}

// problems collects Problems, finding each one's line from its path.
type problems struct {
	file  string
	lines map[string]int // from locate
	list  []Problem
	// seen holds the paths with a problem: only the first at each is
	// reported, so a mistyped value that kept its default (or stayed
	// empty) is not reported again by validation.
	seen map[string]bool
}

// add records a problem at p, unless p already has one. The line is that of
// p or, for a key that is not in the file, of the nearest enclosing table
// that is.
func (ps *problems) add(p path, format string, args ...any) {
	at := p.indexed()
	if ps.seen[at] {
		return
	}
	if ps.seen == nil {
		ps.seen = make(map[string]bool)
	}
	ps.seen[at] = true
	msg := fmt.Sprintf(format, args...)
	if w := p.where(); w != "" {
		msg += " (" + w + ")"
	}
	ps.list = append(ps.list, Problem{File: ps.file, Line: ps.line(p), Key: p.key(), Msg: msg})
}

// line returns the line of p or of its nearest located ancestor; 0 if none.
func (ps *problems) line(p path) int {
	for at := p.indexed(); at != ""; {
		if l, ok := ps.lines[at]; ok {
			return l
		}
		i := strings.LastIndexByte(at, '.')
		if i < 0 {
			break
		}
		at = at[:i]
	}
	return 0
}
