package admin

import (
	"strings"
	"testing"
)

func TestUIAssets(t *testing.T) {
	tests := []struct {
		path, ctype, contains string
		status                int
	}{
		{"/", "text/html; charset=utf-8", `id="login-user"`, 200},
		{"/assets/app.js", "text/javascript; charset=utf-8", "X-CSRF-Token", 200},
		{"/assets/app.css", "text/css; charset=utf-8", ":root", 200},
		{"/assets/logo.svg", "image/svg+xml", "<svg", 200},
		{"/assets/nope.js", "application/json; charset=utf-8", "not found", 404},
		{"/index.html", "application/json; charset=utf-8", "not found", 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			f := newFixture(t)
			r := f.do(t, req{method: "GET", path: tt.path})
			if r.status != tt.status || r.header.Get("Content-Type") != tt.ctype || !strings.Contains(r.body, tt.contains) {
				t.Fatalf("GET %s = %d %q, want %d %q containing %q", tt.path, r.status, r.header.Get("Content-Type"),
					tt.status, tt.ctype, tt.contains)
			}
			for k, v := range map[string]string{
				"X-Frame-Options":        "DENY",
				"X-Content-Type-Options": "nosniff",
				"Referrer-Policy":        "same-origin",
			} {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if csp := r.header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") ||
				!strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
		})
	}
}

func TestUIRevalidation(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, req{method: "GET", path: "/assets/app.js"})
	etag := r.header.Get("ETag")
	if etag == "" || r.header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q Cache-Control %q", etag, r.header.Get("Cache-Control"))
	}
	r = f.do(t, req{method: "GET", path: "/assets/app.js", header: map[string]string{"If-None-Match": etag}})
	if r.status != 304 {
		t.Errorf("revalidation = %d, want 304", r.status)
	}
}

// TestUINoHTMLInjection guards the rule that server strings never reach
// innerHTML: the UI's script must not use it at all.
func TestUINoHTMLInjection(t *testing.T) {
	js := string(assets["app.js"].body)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	html := string(assets["index.html"].body)
	for _, bad := range []string{"<script>", "style=", "onclick", "http://", "https://"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html contains %q (inline code or an external resource)", bad)
		}
	}
}
