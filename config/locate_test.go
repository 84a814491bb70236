package config

import (
	"testing"

	"github.com/BurntSushi/toml"
)

func TestLocate(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want map[string]int // paths that must be at these lines
		none []string       // paths that must not be located
	}{
		{
			name: "tables and keys",
			src: `top = 1
[global]
log_level = "info"

[a.b]
c = 2
`,
			want: map[string]int{"top": 1, "global": 2, "global.log_level": 3, "a.b": 5, "a.b.c": 6},
			none: []string{"a"},
		},
		{
			name: "arrays of tables append to the newest parent element",
			src: `[[virtual_service]]
name = "a"
[[virtual_service.real_server]]
weight = 1
[[virtual_service.real_server]]
weight = 2
[virtual_service.timeouts]
connect = "1s"

[[virtual_service]]
name = "b"
[[virtual_service.real_server]]
weight = 3
[virtual_service.timeouts]
connect = "2s"
`,
			want: map[string]int{
				"virtual_service":                        1,
				"virtual_service.0":                      1,
				"virtual_service.0.name":                 2,
				"virtual_service.0.real_server":          3,
				"virtual_service.0.real_server.0":        3,
				"virtual_service.0.real_server.0.weight": 4,
				"virtual_service.0.real_server.1":        5,
				"virtual_service.0.real_server.1.weight": 6,
				"virtual_service.0.timeouts":             7,
				"virtual_service.0.timeouts.connect":     8,
				"virtual_service.1":                      10,
				"virtual_service.1.name":                 11,
				"virtual_service.1.real_server.0":        12,
				"virtual_service.1.real_server.0.weight": 13,
				"virtual_service.1.timeouts":             14,
				"virtual_service.1.timeouts.connect":     15,
				"virtual_service.1.real_server":          12,
			},
			none: []string{"virtual_service.1.real_server.1", "virtual_service.2", "virtual_service.0.real_server.0.address"},
		},
		{
			name: "dotted and quoted keys",
			src: `[ "global" ]
a.b = 1
"quoted key".'literal' = 2
[ x . "y.z" ]
"esc\u0061ped" = 3
`,
			want: map[string]int{
				"global": 1, "global.a": 2, "global.a.b": 2,
				"global.quoted key.literal": 3, "x.y.z": 4, "x.y.z.escaped": 5,
			},
		},
		{
			name: "comments and strings holding # = [ and quotes",
			src: `# [not_a_table]
# key = 1
a = "x # y = z [t]" # trailing = comment
b = 'c:\path # = ['
c = "say \"hi\" # = "
d = 1 # [[nope]]
`,
			want: map[string]int{"a": 3, "b": 4, "c": 5, "d": 6},
			none: []string{"not_a_table", "key", "nope", "nope.0", "y", "t"},
		},
		{
			name: "multi-line arrays",
			src: `listen = [
  "127.0.0.1:80", # first
  # a comment line
  "[::1]:80",
]
next = [ [1, 2],
  [3] ]
after = 1
`,
			want: map[string]int{
				"listen": 1, "listen.0": 2, "listen.1": 4,
				"next": 6, "next.0": 6, "next.0.1": 6, "next.1": 7, "after": 8,
			},
			none: []string{"listen.2"},
		},
		{
			name: "multi-line strings",
			src: `a = """
[fake]
b = 1 # "
"""
c = '''
[[fake2]]
d = 2
'''
e = """ends with quotes"""""
f = """esc \""" still = inside
"""
g = 3
h = ["""q""""", '''r''''', 4]
`,
			want: map[string]int{"a": 1, "c": 5, "e": 9, "f": 10, "g": 12, "h.2": 13},
			none: []string{"fake", "b", "fake2", "d", "fake2.0", "still", "h.3"},
		},
		{
			name: "inline tables",
			src: `[[virtual_service]]
timeouts = { connect = "1s", server = "2s" }
real_server = [ { address = "10.0.0.1:80" },
  { address = "10.0.0.2:80", weight = 2 } ]
x = {
  y = 1, # TOML 1.1 allows newlines here
  z = { w = 2 },
}
after = 1
`,
			want: map[string]int{
				"virtual_service.0.timeouts":              2,
				"virtual_service.0.timeouts.connect":      2,
				"virtual_service.0.timeouts.server":       2,
				"virtual_service.0.real_server":           3,
				"virtual_service.0.real_server.0":         3,
				"virtual_service.0.real_server.0.address": 3,
				"virtual_service.0.real_server.1":         4,
				"virtual_service.0.real_server.1.weight":  4,
				"virtual_service.0.x":                     5,
				"virtual_service.0.x.y":                   6,
				"virtual_service.0.x.z.w":                 7,
				"virtual_service.0.after":                 9,
				"virtual_service.0.real_server.1.address": 4,
			},
			none: []string{"virtual_service.0.real_server.0.weight", "virtual_service.0.timeouts.client_header", "virtual_service.0.real_server.2"},
		},
		{
			name: "scalars, date-times and CRLF",
			src:  "\uFEFFa = 1979-05-27 07:32:00Z\r\nb = [1979-05-27 07:32:00, 1.5e3, -inf, true]\r\n[t]\r\nc = 0x1F\r\n",
			want: map[string]int{"a": 1, "b": 2, "b.0": 2, "b.1": 2, "b.3": 2, "t": 3, "t.c": 4},
			none: []string{"b.4"},
		},
		{
			name: "a header closed with a comment",
			src: `[[virtual_service]] # web
[virtual_service.timeouts]# t
connect = "1s"
`,
			want: map[string]int{"virtual_service.0": 1, "virtual_service.0.timeouts": 2, "virtual_service.0.timeouts.connect": 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The locator only ever sees documents toml.Decode accepted.
			var m map[string]any
			if _, err := toml.Decode(tt.src, &m); err != nil {
				t.Fatalf("test input is not valid TOML: %v", err)
			}
			got := locate([]byte(tt.src))
			for path, line := range tt.want {
				if got[path] != line {
					t.Errorf("line of %q = %d, want %d", path, got[path], line)
				}
			}
			for _, path := range tt.none {
				if l, ok := got[path]; ok {
					t.Errorf("%q located at line %d, want absent", path, l)
				}
			}
		})
	}
}

// TestLocateGarbage checks that text toml.Decode would refuse does not
// hang or crash the locator.
func TestLocateGarbage(t *testing.T) {
	for _, src := range []string{
		"", "[", "[[", "a", "a =", `a = "`, `a = """`, "a = '''", `a = "\`, "a = [", "a = {", "a = {b",
		"[a", "[[a]", "= 1", "a = [1,,]", "a = {,}", "\"", "'", "a.\"b", "]]]", "a = ]", "a = }",
	} {
		locate([]byte(src))
	}
}
