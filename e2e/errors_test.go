package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestErrorStatuses provokes each failure the proxy answers itself and
// checks the status, that the body is short, whether the connection is
// closed, and that the failure has exactly one log line with its reason.
func TestErrorStatuses(t *testing.T) {
	needCurl(t)
	tests := []struct {
		name string
		// backends returns the service (listen is filled in).
		backends func(t *testing.T) service
		// raw, if set, is sent on a raw connection instead of a curl GET;
		// the connection then stays open without sending more.
		raw       string
		status    int
		closed    bool   // the proxy closes the client connection after it
		logReason string // in the log line's error field
		minTime   time.Duration
	}{
		{
			name: "connect refused by every real server",
			backends: func(t *testing.T) service {
				return service{real: []real{
					{name: "down1", address: freeAddr(t)},
					{name: "down2", address: freeAddr(t)},
				}}
			},
			status:    502,
			logReason: "",
		},
		{
			name: "every real server has weight 0",
			backends: func(t *testing.T) service {
				b := newHTTPBackend(t, "drained", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					t.Errorf("a real server with weight 0 got a request")
				}))
				return service{real: []real{b.real("weight = 0\n")}}
			},
			status:    503,
			logReason: "no real server available",
		},
		{
			name: "real server too slow",
			backends: func(t *testing.T) service {
				b := newSlowBackend(t, 5*time.Second)
				return service{timeouts: "server = \"300ms\"\n", real: []real{b.real("")}}
			},
			status:    504,
			logReason: "timeouts.server",
			minTime:   300 * time.Millisecond,
		},
		{
			name:      "malformed header line",
			raw:       "GET /malformed HTTP/1.1\r\nHost: fulcrum\r\nthis line has no colon\r\n\r\n",
			status:    400,
			closed:    true,
			logReason: "",
		},
		{
			name:   "missing Host",
			raw:    "GET /nohost HTTP/1.1\r\nUser-Agent: raw\r\n\r\n",
			status: 400,
			closed: true,
		},
		{
			name:   "Content-Length and Transfer-Encoding",
			raw:    "POST /smuggle HTTP/1.1\r\nHost: fulcrum\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: 400,
			closed: true,
		},
		{
			name:   "head larger than 16 KiB",
			raw:    "GET /big HTTP/1.1\r\nHost: fulcrum\r\nX-Big: " + strings.Repeat("a", 17<<10) + "\r\n\r\n",
			status: 431,
			closed: true,
		},
		{
			name:    "head not complete within client_header",
			raw:     "GET /slowloris HTTP/1.1\r\nHost: fulcrum\r\nX-Partial: 1\r\n",
			status:  408,
			closed:  true,
			minTime: 300 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var svc service
			if tt.backends != nil {
				svc = tt.backends(t)
			} else {
				b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					t.Errorf("a request the proxy should refuse reached the real server: %s %s", r.Method, r.URL)
				}))
				svc.real = []real{b.real("")}
			}
			vip := freeAddr(t)
			svc.listen = []string{vip}
			if !strings.Contains(svc.timeouts, "client_header") {
				svc.timeouts += "client_header = \"300ms\"\n"
			}
			f := startFulcrum(t, config{services: []service{svc}})

			start := time.Now()
			var status int
			var body string
			if tt.raw == "" {
				status, body = curlStatus(t, "http://"+vip+"/error")
			} else {
				c := dialRaw(t, vip)
				c.send(tt.raw)
				resp := c.response("GET")
				status, body = resp.StatusCode, c.body(resp)
				if resp.Close != tt.closed {
					t.Errorf("Connection: close = %v, want %v", resp.Close, tt.closed)
				}
				if tt.closed {
					c.expectClosed(2 * time.Second)
				}
				c.c.Close() // do not make the proxy's lingering close wait
			}
			elapsed := time.Since(start)
			if status != tt.status {
				t.Errorf("status %d, want %d (body %q)", status, tt.status, body)
			}
			if body == "" || len(body) > 64 {
				t.Errorf("body %q: want a short text", body)
			}
			if elapsed < tt.minTime {
				t.Errorf("answered after %s, before the %s timeout", elapsed, tt.minTime)
			}

			if code := f.stop(); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			// Every line but the start and stop ones is about the one
			// failed request.
			lines := f.logsWhere(func(e logEntry) bool { return !lifecycle[e.str("msg")] })
			if len(lines) != 1 {
				t.Fatalf("%d log lines for one failed request, want 1:\n%s", len(lines), joinLines(lines))
			}
			if got := lines[0].num("status"); got != tt.status {
				t.Errorf("log line status %d, want %d: %v", got, tt.status, lines[0])
			}
			if reason := lines[0].str("error"); reason == "" || !strings.Contains(reason, tt.logReason) {
				t.Errorf("log line error = %q, want a reason containing %q: %v", reason, tt.logReason, lines[0])
			}
		})
	}
}

// lifecycle holds the messages of the log lines of starting and stopping.
var lifecycle = map[string]bool{
	"virtual service listening":              true,
	"fulcrum started":                        true,
	"stopping: finishing in-flight requests": true,
	"fulcrum stopped":                        true,
}

func joinLines(l []logEntry) string {
	var b strings.Builder
	for _, e := range l {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestLargeHeadAccepted: a head just under the 16 KiB limit is forwarded
// whole.
func TestLargeHeadAccepted(t *testing.T) {
	needCurl(t)
	big := strings.Repeat("b", 15<<10)
	b := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Big") != big {
			http.Error(w, "X-Big damaged", 500)
			return
		}
		w.Write([]byte("ok"))
	}))
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})
	if status, body := curlStatus(t, "-H", "X-Big: "+big, "http://"+vip+"/"); status != 200 || body != "ok" {
		t.Errorf("got %d %q, want 200 \"ok\"", status, body)
	}
}

// TestAccessLogOff: with access_log = false a successful request logs
// nothing and a failed one logs one warning.
func TestAccessLogOff(t *testing.T) {
	needCurl(t)
	up := newHTTPBackend(t, "up", nil)
	vip, vipDown := freeAddr(t), freeAddr(t)
	f := startFulcrum(t, config{
		global: "log_format = \"json\"\naccess_log = false\n",
		services: []service{
			{name: "up", listen: []string{vip}, real: []real{up.real("")}},
			{name: "down", listen: []string{vipDown}, real: []real{{name: "down1", address: freeAddr(t)}}},
		},
	})
	if status, _ := curlStatus(t, "http://"+vip+"/"); status != 200 {
		t.Errorf("status %d, want 200", status)
	}
	if status, _ := curlStatus(t, "http://"+vipDown+"/"); status != 502 {
		t.Errorf("status %d, want 502", status)
	}
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	lines := f.logsWhere(func(e logEntry) bool { return !lifecycle[e.str("msg")] })
	if len(lines) != 1 || lines[0].str("level") != "warn" || lines[0].num("status") != 502 || lines[0].str("service") != "down" {
		t.Errorf("log lines:\n%swant one warning with status 502 for service down", joinLines(lines))
	}
}

// TestConsoleLogFormat: log_format = "console" writes readable lines, one
// per request.
func TestConsoleLogFormat(t *testing.T) {
	needCurl(t)
	b := newHTTPBackend(t, "web1", nil)
	vip := freeAddr(t)
	f := startFulcrum(t, config{
		global:   "log_format = \"console\"\n",
		services: []service{{listen: []string{vip}, real: []real{b.real("")}}},
	})
	curlStatus(t, "http://"+vip+"/console-line")
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	var found []string
	for _, line := range strings.Split(f.stderr.String(), "\n") {
		if strings.Contains(line, "/console-line") {
			found = append(found, line)
		}
	}
	if len(found) != 1 || strings.HasPrefix(found[0], "{") || !strings.Contains(found[0], "INFO") || !strings.Contains(found[0], `"status": 200`) {
		t.Errorf("request log lines %q, want one console line at INFO with status 200", found)
	}
}
