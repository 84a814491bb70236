package config

import (
	"strings"
	"testing"
)

func TestCheckHost(t *testing.T) {
	tests := []struct {
		host string
		want string // substring of the message; "" for valid
	}{
		{"example.com", ""},
		{"www.example.com:8443", ""},
		{"localhost", ""},
		{"my_host-1.internal", ""},
		{"10.0.0.1", ""},
		{"10.0.0.1:80", ""},
		{"[::1]", ""},
		{"[2001:db8::1]:8443", ""},
		{"www example.com", "blank, control or non-ASCII"},
		{"example.com\r\nX-Evil: 1", "blank, control or non-ASCII"},
		{"bücher.example", "punycode"},
		{"::1", "IPv6 addresses go in brackets"},
		{"[10.0.0.1]", `"10.0.0.1" is not an IPv6 address`},
		{"[::1", "is not a host or host:port"},
		{"example.com:", `port must be between 1 and 65535, got ""`},
		{"example.com:0", `got "0"`},
		{"example.com:65536", `got "65536"`},
		{"example.com:+80", `got "+80"`},
		{"example.com:http", `got "http"`},
		{":80", "is not a host or host:port"},
		{"a/b", "is not a host or host:port"},
		{"user@host", "is not a host or host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got := checkHost(tt.host)
			switch {
			case tt.want == "" && got != "":
				t.Errorf("unexpected problem: %s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		path string
		want string
	}{
		{"/", ""},
		{"/health?full=1&x=%20", ""},
		{"health", `must start with "/"`},
		{"", `must start with "/"`},
		{"*", `must start with "/"`},
		{"/a b", "percent-encode"},
		{"/a\r\nHost: x", "percent-encode"},
		{"/é", "percent-encode"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got := checkPath(tt.path)
			switch {
			case tt.want == "" && got != "":
				t.Errorf("unexpected problem: %s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}
