package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// curlJar runs one curl request with a cookie jar and returns the body and
// the response's Set-Cookie field (empty if none).
func curlJar(t *testing.T, jar, url string) (body, setCookie string) {
	t.Helper()
	r := curl(t, "-b", jar, "-c", jar, "-D", "/dev/stderr", url)
	if r.code != 0 {
		t.Fatalf("curl %s: exit %d: %s", url, r.code, r.stderr)
	}
	for _, line := range strings.Split(r.stderr, "\r\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "set-cookie") {
			setCookie = strings.TrimSpace(value)
		}
	}
	return r.stdout, setCookie
}

// TestCookiePersistence: curl with a cookie jar sticks to one real server
// through an inserted cookie; a tampered cookie is rescheduled; a draining
// server keeps its persistent clients, one in maintenance loses them.
func TestCookiePersistence(t *testing.T) {
	needCurl(t)
	a, b, c := newHTTPBackend(t, "a", nil), newHTTPBackend(t, "b", nil), newHTTPBackend(t, "c", nil)
	vip := freeAddr(t)
	table, base := adminTable(t)
	startFulcrum(t, config{
		services: []service{{
			listen: []string{vip},
			opts:   "\n[virtual_service.persistence]\nmethod = \"cookie\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n",
			real:   []real{a.real(""), b.real(""), c.real("")},
		}},
		extra: table,
	})
	jar := filepath.Join(t.TempDir(), "jar")
	url := "http://" + vip + "/"
	first, set := curlJar(t, jar, url)
	if !strings.HasPrefix(set, "FULCRUM=") || !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "Path=/") {
		t.Fatalf("first response Set-Cookie = %q, want FULCRUM=...; Path=/; HttpOnly", set)
	}
	server := strings.TrimSpace(first)
	if strings.Contains(set, "127.0.0.1") || strings.Contains(set, server+";") {
		t.Errorf("the cookie reveals the real server: %q", set)
	}
	for i := range 50 {
		body, set := curlJar(t, jar, url)
		if strings.TrimSpace(body) != server || set != "" {
			t.Fatalf("request %d: %q (Set-Cookie %q), want %s and no new cookie", i, body, set, server)
		}
	}

	// Drain: the persistent client still reaches it; a new client does not.
	mustCtl(t, base, "drain", "web/"+server)
	if body, _ := curlJar(t, jar, url); strings.TrimSpace(body) != server {
		t.Errorf("persistent client while %s drains: %q", server, body)
	}
	for range 6 {
		if body, _ := curlJar(t, filepath.Join(t.TempDir(), "new"), url); strings.TrimSpace(body) == server {
			t.Errorf("a new client reached the draining server %s", server)
		}
	}
	// Maintenance: rescheduled with a fresh cookie, then sticks there.
	mustCtl(t, base, "maint", "web/"+server)
	body, set := curlJar(t, jar, url)
	moved := strings.TrimSpace(body)
	if moved == server || !strings.HasPrefix(set, "FULCRUM=") {
		t.Fatalf("persistent client of a server in maintenance: %q with Set-Cookie %q; want another server and a new cookie", body, set)
	}
	mustCtl(t, base, "ready", "web/"+server)
	for range 5 {
		if body, _ := curlJar(t, jar, url); strings.TrimSpace(body) != moved {
			t.Fatalf("after the move the client should stick to %s, got %q", moved, body)
		}
	}

	// Tampered cookie: ignored, scheduled normally, given a fresh cookie.
	for _, forged := range []string{"FULCRUM=AAAAAAAAAAAAAAAAAAAAAA", "FULCRUM=" + server, "FULCRUM="} {
		r := curl(t, "-H", "Cookie: "+forged, "-D", "/dev/stderr", url)
		if r.code != 0 || !strings.Contains(strings.ToLower(r.stderr), "set-cookie: fulcrum=") {
			t.Errorf("forged %q: exit %d, head:\n%s; want a fresh cookie", forged, r.code, r.stderr)
		}
	}
}

// TestAppCookiePersistence: Fulcrum learns the application's JSESSIONID
// from the real server's Set-Cookie and routes the session back there.
func TestAppCookiePersistence(t *testing.T) {
	needCurl(t)
	var n atomic.Int64
	app := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := r.Cookie("JSESSIONID"); err != nil {
				http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: fmt.Sprintf("%s%08d", name, n.Add(1)), Path: "/"})
			}
			io.WriteString(w, name)
		})
	}
	a, b := newHTTPBackend(t, "a", app("a")), newHTTPBackend(t, "b", app("b"))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "\n[virtual_service.persistence]\nmethod = \"app_cookie\"\ncookie_name = \"JSESSIONID\"\n",
		real:   []real{a.real(""), b.real("")},
	}}})
	url := "http://" + vip + "/"
	for _, client := range []string{"one", "two", "three"} {
		jar := filepath.Join(t.TempDir(), client)
		first, set := curlJar(t, jar, url)
		if !strings.HasPrefix(set, "JSESSIONID="+first) {
			t.Fatalf("%s: first answer %q with Set-Cookie %q", client, first, set)
		}
		for range 20 {
			if body, _ := curlJar(t, jar, url); body != first {
				t.Fatalf("%s: session of %s answered by %s", client, first, body)
			}
		}
	}
	// Without the cookie: plain round robin.
	if got := tally(t, vip, 4); got["a"] != 2 || got["b"] != 2 {
		t.Errorf("clients without a session: %v", got)
	}
}

// getFrom sends one request from the local address ip and returns the body.
func getFrom(t *testing.T, ip, vip string) string {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + vip + "/")
	if err != nil {
		t.Fatalf("GET from %s: %v", ip, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}

// TestSourceIPPersistence: clients stick by address, or by subnet with
// source_mask, whatever the scheduler would do.
func TestSourceIPPersistence(t *testing.T) {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		t.Log("note: no IPv6; IPv4 only")
	}
	a, b, c := newHTTPBackend(t, "a", nil), newHTTPBackend(t, "b", nil), newHTTPBackend(t, "c", nil)
	for _, tt := range []struct {
		name  string
		mask  int
		group func(i int) string // the addresses that must share a server
	}{
		{"per address", 32, func(i int) string { return fmt.Sprintf("127.0.0.%d", 10+i) }},
		{"per /24", 24, func(i int) string { return fmt.Sprintf("127.0.%d.%d", 10+i%3, 20+i) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vip := freeAddr(t)
			startFulcrum(t, config{services: []service{{
				listen: []string{vip},
				opts:   fmt.Sprintf("\n[virtual_service.persistence]\nmethod = \"source_ip\"\nsource_mask = %d\n", tt.mask),
				real:   []real{a.real(""), b.real(""), c.real("")},
			}}})
			seen := map[string]string{} // stick key -> server
			servers := map[string]bool{}
			for i := range 9 {
				ip := tt.group(i)
				key := ip
				if tt.mask == 24 {
					key = ip[:strings.LastIndex(ip, ".")]
				}
				for range 5 {
					got := getFrom(t, ip, vip)
					servers[got] = true
					if want, ok := seen[key]; ok && got != want {
						t.Fatalf("%s (key %s) reached %s, earlier %s", ip, key, got, want)
					}
					seen[key] = got
				}
			}
			if len(servers) < 2 {
				t.Errorf("every client on one server (%v): persistence should not stop balancing", servers)
			}
		})
	}
}

// getWith sends one request with the given path and header, and returns the
// body.
func getWith(t *testing.T, vip, path, header, value string) string {
	t.Helper()
	r := curl(t, "-H", header+": "+value, "http://"+vip+path)
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// TestHeaderPersistenceAndHashing: the header method sticks a header's
// value; uri_hash and header_hash send equal keys to one real server and
// spread different keys.
func TestHeaderPersistenceAndHashing(t *testing.T) {
	needCurl(t)
	a, b, c := newHTTPBackend(t, "a", nil), newHTTPBackend(t, "b", nil), newHTTPBackend(t, "c", nil)
	reals := []real{a.real(""), b.real(""), c.real("")}
	tests := []struct {
		name, opts string
		key        func(i int) (path, value string)
	}{
		{"header persistence", "\n[virtual_service.persistence]\nmethod = \"header\"\nheader = \"X-User\"\n",
			func(i int) (string, string) { return fmt.Sprintf("/p%d", i), fmt.Sprintf("user%d", i%4) }},
		{"uri_hash", "scheduler = \"uri_hash\"\n",
			func(i int) (string, string) { return fmt.Sprintf("/item/%d?q=%d", i%4, i), "x" }},
		{"header_hash", "scheduler = \"header_hash\"\nhash_header = \"X-User\"\n",
			func(i int) (string, string) { return fmt.Sprintf("/p%d", i), fmt.Sprintf("user%d", i%4) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vip := freeAddr(t)
			startFulcrum(t, config{services: []service{{listen: []string{vip}, opts: tt.opts, real: reals}}})
			where := map[int]string{} // key index -> server
			servers := map[string]bool{}
			for i := range 24 {
				path, value := tt.key(i)
				got := getWith(t, vip, path, "X-User", value)
				servers[got] = true
				if prev, ok := where[i%4]; ok && got != prev {
					t.Fatalf("key %d reached %s, earlier %s", i%4, got, prev)
				}
				where[i%4] = got
			}
			if len(servers) < 2 {
				t.Errorf("4 keys all on %v", servers)
			}
		})
	}
}
