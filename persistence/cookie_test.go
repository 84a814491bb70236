package persistence

import (
	"bytes"
	"strings"
	"testing"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func TestSignerToken(t *testing.T) {
	s := NewSigner([]byte(testSecret))
	// Golden value (also computed with Python's hmac): the format must not
	// change between releases, or an upgrade would reschedule every client
	// and the members of an HA pair running different versions disagree.
	if got, want := s.Token("web", "rs1"), "I6PPhPuUuZ4LZrgjHqbVJQ"; got != want {
		t.Errorf(`Token("web", "rs1") = %q, want %q`, got, want)
	}
	tests := []struct {
		name      string
		a, b      string // service\x00server pairs compared
		other     *Signer
		wantEqual bool
	}{
		{name: "deterministic", a: "web\x00rs1", b: "web\x00rs1", wantEqual: true},
		{name: "same secret elsewhere", a: "web\x00rs1", b: "web\x00rs1", other: NewSigner([]byte(testSecret)), wantEqual: true},
		{name: "differs per server", a: "web\x00rs1", b: "web\x00rs2"},
		{name: "differs per service", a: "web\x00rs1", b: "api\x00rs1"},
		{name: "separator matters", a: "web\x00rs1", b: "webr\x00s1"},
		{name: "differs per secret", a: "web\x00rs1", b: "web\x00rs1", other: NewSigner([]byte("another secret of 32 bytes......"))},
		{name: "random secret", a: "web\x00rs1", b: "web\x00rs1", other: NewSigner(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := s
			if tt.other != nil {
				o = tt.other
			}
			sa, ra, _ := strings.Cut(tt.a, "\x00")
			sb, rb, _ := strings.Cut(tt.b, "\x00")
			ta, tb := s.Token(sa, ra), o.Token(sb, rb)
			if (ta == tb) != tt.wantEqual {
				t.Errorf("Token(%q) = %q, Token(%q) = %q; equal = %v, want %v", tt.a, ta, tt.b, tb, ta == tb, tt.wantEqual)
			}
		})
	}
}

func TestSignerTokenFormat(t *testing.T) {
	for _, s := range []*Signer{NewSigner(nil), NewSigner([]byte{}), NewSigner([]byte(testSecret))} {
		for _, server := range []string{"rs1", "10.0.0.1:8080", "", strings.Repeat("x", 300)} {
			tok := s.Token("web", server)
			if len(tok) != TokenLen {
				t.Errorf("len(%q) = %d, want %d", tok, len(tok), TokenLen)
			}
			for _, c := range []byte(tok) {
				if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
					t.Errorf("token %q has %q, not base64url", tok, c)
				}
			}
			if server != "" && strings.Contains(tok, server) {
				t.Errorf("token %q reveals server %q", tok, server)
			}
		}
	}
	s1, s2 := NewSigner(nil), NewSigner(nil)
	if s1.Token("web", "rs1") == s2.Token("web", "rs1") {
		t.Error("two random signers made the same token")
	}
}

func TestNewSignerCopiesSecret(t *testing.T) {
	secret := []byte(testSecret)
	s := NewSigner(secret)
	before := s.Token("web", "rs1")
	secret[0] ^= 0xff
	if after := s.Token("web", "rs1"); after != before {
		t.Error("changing the caller's secret slice changed the tokens")
	}
}

func TestSetCookieValue(t *testing.T) {
	tests := []struct {
		name   string
		secure bool
		want   string
	}{
		{name: "plain", want: "FULCRUM=I6PPhPuUuZ4LZrgjHqbVJQ; Path=/; HttpOnly; SameSite=Lax"},
		{name: "tls", secure: true, want: "FULCRUM=I6PPhPuUuZ4LZrgjHqbVJQ; Path=/; HttpOnly; SameSite=Lax; Secure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SetCookieValue("FULCRUM", "I6PPhPuUuZ4LZrgjHqbVJQ", tt.secure); got != tt.want {
				t.Errorf("SetCookieValue = %q, want %q", got, tt.want)
			}
			dst := []byte("Set-Cookie: ")
			if got := string(AppendSetCookie(dst, "FULCRUM", "I6PPhPuUuZ4LZrgjHqbVJQ", tt.secure)); got != "Set-Cookie: "+tt.want {
				t.Errorf("AppendSetCookie = %q", got)
			}
			// What we set is what we find again.
			name, value, ok := SetCookieName([]byte(tt.want))
			if !ok || string(name) != "FULCRUM" || string(value) != "I6PPhPuUuZ4LZrgjHqbVJQ" {
				t.Errorf("SetCookieName(%q) = %q, %q, %v", tt.want, name, value, ok)
			}
		})
	}
}

func TestCookieValue(t *testing.T) {
	tests := []struct {
		name   string
		header string
		cookie string
		want   string
		wantOK bool
	}{
		{name: "only", header: "FULCRUM=abc", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "first of several", header: "FULCRUM=abc; JSESSIONID=x1", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "last of several", header: "a=1; b=2; FULCRUM=abc", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "no space after semicolon", header: "a=1;FULCRUM=abc;b=2", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "spaces and tabs", header: " a=1 ;\t FULCRUM \t= abc \t; b=2", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "quoted", header: `a=1; FULCRUM="abc"`, cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "quoted empty", header: `FULCRUM=""`, cookie: "FULCRUM", want: "", wantOK: true},
		{name: "lone quote kept", header: `FULCRUM="`, cookie: "FULCRUM", want: `"`, wantOK: true},
		{name: "empty value", header: "FULCRUM=; b=2", cookie: "FULCRUM", want: "", wantOK: true},
		{name: "value with equals", header: "FULCRUM=a=b", cookie: "FULCRUM", want: "a=b", wantOK: true},
		{name: "first of duplicates", header: "FULCRUM=one; FULCRUM=two", cookie: "FULCRUM", want: "one", wantOK: true},
		{name: "trailing semicolon", header: "FULCRUM=abc;", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "pair without equals skipped", header: "FULCRUM; FULCRUM=abc", cookie: "FULCRUM", want: "abc", wantOK: true},
		{name: "absent", header: "a=1; b=2", cookie: "FULCRUM", wantOK: false},
		{name: "longer name", header: "FULCRUMX=1", cookie: "FULCRUM", wantOK: false},
		{name: "shorter name", header: "FULCRU=1", cookie: "FULCRUM", wantOK: false},
		{name: "suffix name", header: "XFULCRUM=1", cookie: "FULCRUM", wantOK: false},
		{name: "case sensitive", header: "fulcrum=1", cookie: "FULCRUM", wantOK: false},
		{name: "value is not a name", header: "a=FULCRUM", cookie: "FULCRUM", wantOK: false},
		{name: "empty header", header: "", cookie: "FULCRUM", wantOK: false},
		{name: "empty name never matches", header: "=abc", cookie: "", wantOK: false},
		{name: "only separators", header: " ; ;; ", cookie: "FULCRUM", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := CookieValue([]byte(tt.header), tt.cookie)
			if ok != tt.wantOK || string(got) != tt.want {
				t.Errorf("CookieValue(%q, %q) = %q, %v; want %q, %v", tt.header, tt.cookie, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCookieValueAllocs(t *testing.T) {
	h := []byte("_ga=GA1.2.3; JSESSIONID=0123456789ABCDEF; FULCRUM=I6PPhPuUuZ4LZrgjHqbVJQ")
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := CookieValue(h, "FULCRUM"); !ok {
			t.Fatal("not found")
		}
	}); n != 0 {
		t.Errorf("CookieValue allocates %v times, want 0", n)
	}
}

func TestSetCookieName(t *testing.T) {
	tests := []struct {
		name      string
		field     string
		wantName  string
		wantValue string
		wantOK    bool
	}{
		{name: "attributes", field: "JSESSIONID=0123ABC; Path=/; HttpOnly", wantName: "JSESSIONID", wantValue: "0123ABC", wantOK: true},
		{name: "bare", field: "JSESSIONID=0123ABC", wantName: "JSESSIONID", wantValue: "0123ABC", wantOK: true},
		{name: "spaces", field: "  JSESSIONID =  0123ABC  ;Path=/", wantName: "JSESSIONID", wantValue: "0123ABC", wantOK: true},
		{name: "quoted", field: `JSESSIONID="0123ABC"; Secure`, wantName: "JSESSIONID", wantValue: "0123ABC", wantOK: true},
		{name: "deletion", field: "JSESSIONID=; Max-Age=0", wantName: "JSESSIONID", wantValue: "", wantOK: true},
		{name: "value with equals", field: "sid=a=b; Path=/", wantName: "sid", wantValue: "a=b", wantOK: true},
		{name: "no equals", field: "JSESSIONID; Path=/", wantOK: false},
		{name: "equals only in attribute", field: "JSESSIONID; Path=/x", wantOK: false},
		{name: "empty name", field: "=abc; Path=/", wantOK: false},
		{name: "empty", field: "", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, value, ok := SetCookieName([]byte(tt.field))
			if ok != tt.wantOK || string(name) != tt.wantName || string(value) != tt.wantValue {
				t.Errorf("SetCookieName(%q) = %q, %q, %v; want %q, %q, %v",
					tt.field, name, value, ok, tt.wantName, tt.wantValue, tt.wantOK)
			}
		})
	}
}

// refCookieValue is an obviously correct, allocating CookieValue.
func refCookieValue(header, name string) (string, bool) {
	if name == "" {
		return "", false
	}
	for _, pair := range strings.Split(header, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || strings.Trim(k, " \t") != name {
			continue
		}
		v = strings.Trim(v, " \t")
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

func FuzzCookieValue(f *testing.F) {
	f.Add("FULCRUM=abc; JSESSIONID=x1", "FULCRUM")
	f.Add(` a=1 ;	FULCRUM = "abc" `, "FULCRUM")
	f.Add("FULCRUM; FULCRUM=", "FULCRUM")
	f.Add("=;=;", "")
	f.Add(`x="`, "x")
	f.Fuzz(func(t *testing.T, header, name string) {
		h := []byte(header)
		got, ok := CookieValue(h, name)
		want, wantOK := refCookieValue(header, name)
		if ok != wantOK || string(got) != want {
			t.Fatalf("CookieValue(%q, %q) = %q, %v; reference says %q, %v", header, name, got, ok, want, wantOK)
		}
		if ok && len(got) > 0 && !bytes.Contains(h, got) {
			t.Fatalf("value %q is not from the header", got)
		}
		if bytes.IndexByte(got, ';') >= 0 {
			t.Fatalf("value %q spans a separator", got)
		}
		// SetCookieName reads the first pair the same way.
		n, v, ok := SetCookieName(h)
		if ok {
			if len(n) == 0 {
				t.Fatal("SetCookieName: ok with an empty name")
			}
			if v2, ok2 := CookieValue(h, string(n)); !ok2 || !bytes.Equal(v, v2) {
				t.Fatalf("SetCookieName(%q) = %q, %q but CookieValue finds %q, %v", header, n, v, v2, ok2)
			}
		}
	})
}
