package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestKeepAlive sends many requests on one client connection and checks
// that the proxy keeps it open and reuses its real server connections
// instead of opening one per request.
func TestKeepAlive(t *testing.T) {
	needCurl(t)
	tests := []struct {
		name    string
		handler func(name string) http.Handler
		args    []string // more curl arguments
	}{
		{"content-length responses", nil, nil},
		{"chunked responses", func(name string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, name)
				w.(http.Flusher).Flush() // no Content-Length: chunked
				fmt.Fprintln(w)
			})
		}, nil},
		{"POST bodies", nil, []string{"--data-binary", strings.Repeat("body", 5000)}},
		{"chunked POST bodies", nil, []string{"-H", "Transfer-Encoding: chunked", "--data-binary", strings.Repeat("body", 5000)}},
	}
	const requests = 20
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var backends []*httpBackend
			vip := freeAddr(t)
			svc := service{listen: []string{vip}}
			for i := range 2 {
				name := fmt.Sprintf("web%d", i+1)
				var h http.Handler
				if tt.handler != nil {
					h = tt.handler(name)
				}
				b := newHTTPBackend(t, name, h)
				backends = append(backends, b)
				svc.real = append(svc.real, b.real(""))
			}
			f := startFulcrum(t, config{services: []service{svc}})

			args := append([]string{"-w", "connects=%{num_connects}\n"}, tt.args...)
			for range requests {
				args = append(args, "http://"+vip+"/ka")
			}
			r := curl(t, args...)
			if r.code != 0 {
				t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
			}
			clientConns := strings.Count(r.stdout, "connects=1")
			if n := strings.Count(r.stdout, "connects="); n != requests {
				t.Fatalf("curl made %d transfers, want %d: %q", n, requests, r.stdout)
			}
			if clientConns != 1 {
				t.Errorf("client opened %d connections for %d requests, want 1 (proxy closed keep-alive connections)", clientConns, requests)
			}
			for _, b := range backends {
				if got := b.reqs.Load(); got != requests/2 {
					t.Errorf("%s served %d requests, want %d", b.name, got, requests/2)
				}
				if got := b.conns.Load(); got != 1 {
					t.Errorf("%s accepted %d connections for %d requests, want 1 (real server connections not reused)", b.name, got, b.reqs.Load())
				}
			}
			if code := f.stop(); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			if got := len(f.accessLogs()); got != requests {
				t.Errorf("%d access log lines, want %d", got, requests)
			}
		})
	}
}
