package config

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestStatusRangesDecode feeds expect_status values as TOML text, so that
// they reach decodeTOML as BurntSushi/toml produces them.
func TestStatusRangesDecode(t *testing.T) {
	tests := []struct {
		name  string
		value string       // the TOML value of expect_status
		want  StatusRanges // when valid
		bad   []string     // "ELEM: MSG" per problem (ELEM -1: the whole value)
	}{
		{name: "one integer", value: `204`, want: StatusRanges{{204, 204}}},
		{name: "one string", value: `"204"`, want: StatusRanges{{204, 204}}},
		{name: "one range", value: `"300-399"`, want: StatusRanges{{300, 399}}},
		{name: "blanks around the parts", value: `" 200 - 299 "`, want: StatusRanges{{200, 299}}},
		{name: "a range of one", value: `"404-404"`, want: StatusRanges{{404, 404}}},
		{name: "class", value: `"2xx"`, want: StatusRanges{{200, 299}}},
		{name: "class in capitals", value: `"5XX"`, want: StatusRanges{{500, 599}}},
		{name: "edges", value: `[100, 599]`, want: StatusRanges{{100, 100}, {599, 599}}},
		{
			name:  "mixed",
			value: `[200, "204", "300-399", "4xx"]`,
			want:  StatusRanges{{200, 200}, {204, 204}, {300, 399}, {400, 499}},
		},
		{name: "empty list (validation reports it)", value: `[]`, want: StatusRanges{}},
		{name: "lo > hi", value: `"399-300"`, bad: []string{`-1: "399-300" is not a status or a lo-hi range: 399 > 300`}},
		{name: "too short a bound", value: `"300-2"`, bad: []string{`-1: "300-2" is not a status or a lo-hi range`}},
		{name: "bound too high", value: `"500-600"`, bad: []string{`-1: "500-600" is not a status or a lo-hi range: 600 is outside 100-599`}},
		{name: "bound too low", value: `"099-200"`, bad: []string{`-1: "099-200" is not a status or a lo-hi range: 99 is outside 100-599`}},
		{name: "integer too high", value: `600`, bad: []string{`-1: 600 is not a status: statuses are 100-599`}},
		{name: "integer too low", value: `99`, bad: []string{`-1: 99 is not a status: statuses are 100-599`}},
		{name: "sign", value: `"+200"`, bad: []string{`-1: "+200" is not a status or a lo-hi range`}},
		{name: "open range", value: `"200-"`, bad: []string{`-1: "200-" is not a status or a lo-hi range`}},
		{name: "two dashes", value: `"200-300-400"`, bad: []string{`-1: "200-300-400" is not a status or a lo-hi range`}},
		{name: "no such class", value: `"6xx"`, bad: []string{`-1: "6xx" is not a status or a lo-hi range`}},
		{name: "half a class", value: `"20x"`, bad: []string{`-1: "20x" is not a status or a lo-hi range`}},
		{name: "empty string", value: `""`, bad: []string{`-1: "" is not a status or a lo-hi range`}},
		{name: "boolean", value: `true`, bad: []string{`-1: expected a status (200) or a "lo-hi" range ("300-399"), got boolean true`}},
		{name: "table", value: `{ lo = 200 }`, bad: []string{`-1: expected a status (200) or a "lo-hi" range ("300-399"), got table`}},
		{
			name:  "every bad element, by index",
			value: `[200, 2.5, "300-399", [404], "abc"]`,
			bad: []string{
				`1: expected a status (200) or a "lo-hi" range ("300-399"), got float 2.5`,
				`3: expected a status (200) or a "lo-hi" range ("300-399"), got array`,
				`4: "abc" is not a status or a lo-hi range`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			if _, err := toml.Decode("expect_status = "+tt.value, &m); err != nil {
				t.Fatal(err)
			}
			def := StatusRanges{{200, 399}}
			r := def
			var bad []string
			r.decodeTOML(m["expect_status"], func(elem int, msg string) {
				bad = append(bad, strconv.Itoa(elem)+": "+msg)
			})
			if tt.bad != nil {
				if got, want := strings.Join(bad, "\n"), strings.Join(tt.bad, "\n"); got != want {
					t.Errorf("problems:\n%s\nwant:\n%s", got, want)
				}
				if !reflect.DeepEqual(r, def) {
					t.Errorf("value %v after a problem, want the default kept", r)
				}
				return
			}
			if bad != nil {
				t.Fatalf("unexpected problems: %q", bad)
			}
			if !reflect.DeepEqual(r, tt.want) {
				t.Errorf("got %#v, want %#v", r, tt.want)
			}
		})
	}
}

func TestStatusRangesMatch(t *testing.T) {
	r := StatusRanges{{200, 200}, {204, 204}, {300, 399}}
	tests := []struct {
		code int
		want bool
	}{
		{199, false}, {200, true}, {201, false}, {204, true}, {299, false},
		{300, true}, {302, true}, {399, true}, {400, false}, {503, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			if got := r.Match(tt.code); got != tt.want {
				t.Errorf("Match(%d) = %t, want %t", tt.code, got, tt.want)
			}
		})
	}
	if (StatusRanges{}).Match(200) {
		t.Error("an empty list matched 200")
	}
}

func TestStatusRangesString(t *testing.T) {
	tests := []struct {
		r    StatusRanges
		want string
	}{
		{nil, ""},
		{StatusRanges{{200, 399}}, "200-399"},
		{StatusRanges{{200, 200}, {300, 302}}, "200, 300-302"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
