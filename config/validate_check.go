package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Accepted values of the health check's enumerated keys.
var (
	checkTypes   = []string{CheckTCP, CheckHTTP, CheckHTTPS, CheckSendExpect, CheckNone}
	checkMethods = []string{"GET", "HEAD"}
)

// checkKeyTypes lists the health_check keys that only some types use, with
// those types. Such a key set for another type is reported rather than
// ignored: whoever writes path = "/health" under type = "tcp" expects the
// path to be checked.
var checkKeyTypes = []struct {
	key   string
	types []string
}{
	{"method", []string{CheckHTTP, CheckHTTPS}},
	{"path", []string{CheckHTTP, CheckHTTPS}},
	{"host", []string{CheckHTTP, CheckHTTPS}},
	{"expect_status", []string{CheckHTTP, CheckHTTPS}},
	{"expect_body", []string{CheckHTTP, CheckHTTPS}},
	{"tls_verify", []string{CheckHTTPS}},
	{"send", []string{CheckSendExpect}},
	{"expect", []string{CheckSendExpect}},
	{"port", activeChecks},
	{"rise", activeChecks},
	{"fall", activeChecks},
}

// activeChecks are the types that probe the real servers.
var activeChecks = []string{CheckTCP, CheckHTTP, CheckHTTPS, CheckSendExpect}

// healthCheck checks a virtual service's [virtual_service.health_check].
func (v *validator) healthCheck(p path, h *HealthCheck) {
	v.oneOf(p.with("type"), h.Type, checkTypes)
	v.oneOf(p.with("method"), h.Method, checkMethods)
	if msg := checkPath(h.Path); msg != "" {
		v.add(p.with("path"), "%s", msg)
	}
	if msg := checkHost(h.Host); h.Host != "" && msg != "" {
		v.add(p.with("host"), "%s", msg)
	}
	if len(h.ExpectStatus) == 0 {
		v.add(p.with("expect_status"), `must list at least one status or range, such as [200, "300-399"]`)
	}
	v.regexp(p.with("expect_body"), h.ExpectBody)
	v.regexp(p.with("expect"), h.Expect)
	if h.Type == CheckSendExpect && h.Expect == "" {
		v.add(p.with("expect"), "required for type %s: the regular expression a reply must match", CheckSendExpect)
	}
	v.between(p.with("port"), h.Port, 0, 65535)
	v.between(p.with("agent_port"), h.AgentPort, 0, 65535)

	intervalOK := h.Interval >= MinCheckInterval
	if !intervalOK {
		v.add(p.with("interval"), "must be >= %s, got %s", MinCheckInterval, h.Interval)
	}
	switch {
	case h.Timeout <= 0:
		v.add(p.with("timeout"), "must be > 0, got %s", h.Timeout)
	case intervalOK && h.Timeout > h.Interval:
		// Checks of one server never overlap, so that a slow server
		// does not collect piles of them.
		v.add(p.with("timeout"), "must be <= interval (%s), got %s", h.Interval, h.Timeout)
	}
	v.between(p.with("rise"), h.Rise, 1, MaxRiseFall)
	v.between(p.with("fall"), h.Fall, 1, MaxRiseFall)
	v.notNegative(p.with("slow_start"), h.SlowStart)
	v.between(p.with("observe_errors"), h.ObserveErrors, 0, -1)
	if h.ObserveErrors > 0 && h.Type == CheckNone {
		v.add(p.with("observe_errors"), "needs an active health check to bring the server back (type is %q)", h.Type)
	}

	if !slices.Contains(checkTypes, h.Type) {
		return // which keys apply is unknown
	}
	for _, k := range checkKeyTypes {
		if !v.inFile(p.with(k.key)) || slices.Contains(k.types, h.Type) {
			continue
		}
		if slices.Equal(k.types, activeChecks) {
			v.add(p.with(k.key), "not used by type %q (no active check)", h.Type)
		} else {
			v.add(p.with(k.key), "used only by type %s, not %q", orList(k.types), h.Type)
		}
	}
}

// regexp checks that expr compiles as a Go regular expression (RE2 syntax).
func (v *validator) regexp(p path, expr string) {
	if _, err := regexp.Compile(expr); err != nil {
		v.add(p, "not a valid regular expression: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
}

// orList renders "a", "a or b", "a, b or c".
func orList(list []string) string {
	if len(list) == 1 {
		return list[0]
	}
	return strings.Join(list[:len(list)-1], ", ") + " or " + list[len(list)-1]
}

// visibleASCII reports whether s holds only printable ASCII without blanks:
// what a request target or Host may carry as is (RFC 9112 §3.2, RFC 3986
// §2). A blank or CR/LF would corrupt the request head.
func visibleASCII(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// checkPath checks an http/https check's request target (origin-form, RFC
// 9112 §3.2.1); the message says what is wrong, if anything.
func checkPath(s string) string {
	switch {
	case !strings.HasPrefix(s, "/"):
		return fmt.Sprintf(`must start with "/", got %q`, s)
	case !visibleASCII(s):
		return fmt.Sprintf("%q holds a blank, control or non-ASCII character; percent-encode it", s)
	}
	return ""
}

// checkHost checks an http/https check's Host: uri-host [":" port] (RFC 9110
// §7.2), where uri-host is a name, an IPv4 address or a bracketed IPv6 one.
// The message says what is wrong, if anything.
func checkHost(s string) string {
	bad := fmt.Sprintf("%q is not a host or host:port", s)
	if !visibleASCII(s) {
		return bad + ": it holds a blank, control or non-ASCII character (write names in punycode)"
	}
	host := s
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, ']') {
		host = s[:i]
		if n, err := strconv.Atoi(s[i+1:]); err != nil || n < 1 || n > 65535 || !isDigit(s[i+1]) {
			return bad + fmt.Sprintf(": port must be between 1 and 65535, got %q", s[i+1:])
		}
	}
	switch {
	case strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]"):
		if a, err := netip.ParseAddr(host[1 : len(host)-1]); err != nil || !a.Is6() {
			return bad + fmt.Sprintf(": %q is not an IPv6 address", host[1:len(host)-1])
		}
	case strings.Contains(host, ":") && !strings.Contains(host, "["):
		return bad + ` (IPv6 addresses go in brackets: "[::1]:8080")`
	case host == "" || strings.ContainsFunc(host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || isDigit(byte(r)) || r == '-' || r == '.' || r == '_')
	}):
		return bad
	}
	return ""
}
