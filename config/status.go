package config

import (
	"fmt"
	"strconv"
	"strings"
)

// The TOML form of expect_status: one status or range, or an array of them
// mixed. A status is an integer (200) or a string ("200"); a range is a
// string, "lo-hi" ("300-399", both ends included) or "Nxx" ("2xx" is
// 200-299).

// Status codes are three digits, of which RFC 9110 §15 defines the classes
// 1xx to 5xx; anything else is a typo here.
const (
	minStatus = 100
	maxStatus = 599
)

func (r *StatusRanges) decodeTOML(raw any, bad func(elem int, msg string)) {
	list, isList := raw.([]any)
	if !isList {
		list = []any{raw}
	}
	out := make(StatusRanges, 0, len(list))
	ok := true
	for i, e := range list {
		sr, msg := parseStatusRange(e)
		if msg != "" {
			if !isList {
				i = -1
			}
			bad(i, msg)
			ok = false
			continue
		}
		out = append(out, sr)
	}
	// On a mistake keep the default, as for any other mistyped value, so
	// that validation does not report a list emptied by it on top.
	if ok {
		*r = out
	}
}

// parseStatusRange parses one element of expect_status; msg says what is
// wrong, if anything.
func parseStatusRange(e any) (r StatusRange, msg string) {
	switch x := e.(type) {
	case int64:
		if x < minStatus || x > maxStatus {
			return r, fmt.Sprintf("%d is not a status: statuses are %d-%d", x, minStatus, maxStatus)
		}
		return StatusRange{int(x), int(x)}, ""
	case string:
		return parseStatusText(x)
	}
	return r, fmt.Sprintf(`expected a status (200) or a "lo-hi" range ("300-399"), got %s`, describe(e))
}

// parseStatusText parses "200", "300-399" or "2xx".
func parseStatusText(s string) (r StatusRange, msg string) {
	bad := fmt.Sprintf("%q is not a status or a lo-hi range", s)
	t := strings.TrimSpace(s)
	if len(t) == 3 && t[0] >= '1' && t[0] <= '5' && strings.EqualFold(t[1:], "xx") {
		lo := int(t[0]-'0') * 100
		return StatusRange{lo, lo + 99}, ""
	}
	loText, hiText, isRange := strings.Cut(t, "-")
	if !isRange {
		hiText = loText
	}
	lo, ok1 := statusCode(loText)
	hi, ok2 := statusCode(hiText)
	switch {
	case !ok1 || !ok2:
		return r, bad
	case lo < minStatus || lo > maxStatus:
		return r, fmt.Sprintf("%s: %d is outside %d-%d", bad, lo, minStatus, maxStatus)
	case hi < minStatus || hi > maxStatus:
		return r, fmt.Sprintf("%s: %d is outside %d-%d", bad, hi, minStatus, maxStatus)
	case lo > hi:
		return r, fmt.Sprintf("%s: %d > %d", bad, lo, hi)
	}
	return StatusRange{lo, hi}, ""
}

// statusCode parses three decimal digits, with blanks around them allowed.
func statusCode(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if len(s) != 3 {
		return 0, false
	}
	for i := range len(s) {
		if !isDigit(s[i]) {
			return 0, false
		}
	}
	n, _ := strconv.Atoi(s)
	return n, true
}

// String renders the ranges as they may be written in the file:
// "200, 300-399".
func (r StatusRanges) String() string {
	parts := make([]string, len(r))
	for i, x := range r {
		parts[i] = x.String()
	}
	return strings.Join(parts, ", ")
}
