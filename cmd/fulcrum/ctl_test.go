package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fulcrumlb/fulcrum/config"
)

// apiRequest is what the fake admin API received.
type apiRequest struct {
	method, uri, contentType, body string
	user, password                 string
	basic                          bool
}

// fakeAPI stands in for the admin API: it records each request and gives
// the canned answer.
type fakeAPI struct {
	*httptest.Server
	mu     sync.Mutex
	got    []apiRequest
	status int
	answer string
}

func newFakeAPI(t *testing.T, tlsCert *tls.Certificate) *fakeAPI {
	t.Helper()
	f := &fakeAPI{status: http.StatusOK, answer: "{}"}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	if tlsCert != nil {
		f.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		f.StartTLS()
	} else {
		f.Start()
	}
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	user, pw, ok := r.BasicAuth()
	f.mu.Lock()
	f.got = append(f.got, apiRequest{method: r.Method, uri: r.RequestURI, contentType: r.Header.Get("Content-Type"),
		body: string(body), user: user, password: pw, basic: ok})
	status, answer := f.status, f.answer
	f.mu.Unlock()
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, answer)
}

func (f *fakeAPI) answerWith(status int, answer string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.answer, f.got = status, answer, nil
}

func (f *fakeAPI) requests() []apiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiRequest(nil), f.got...)
}

const statusJSON = `{"time":"2025-01-02T03:04:05Z","services":[
 {"name":"web","mode":"http","scheduler":"round_robin","listen":["127.0.0.1:8080","[::1]:8080"],"color":"blue",
  "active_connections":3,"queue":1,"requests":100,"errors":2,"request_rate":12.34,"error_rate":0.5,
  "real_servers":[
   {"name":"web1","address":"10.0.0.1:80","color":"green","health":"up","state":"ready","weight":10,
    "effective_weight":5,"max_conns":0,"active":2,"requests":60,
    "responses":{"1xx":0,"2xx":60,"3xx":0,"4xx":0,"5xx":0},"bytes_in":1,"bytes_out":2,"connect_errors":0,"retries":0,
    "check":{"type":"http","ok":true,"detail":"HTTP 200","latency_ns":3000000,"time":"2025-01-02T03:04:04Z","agent":"75%"},
    "request_rate":6,"error_rate":0},
   {"name":"web2","address":"10.0.0.2:80","color":"blue","health":"down","state":"maintenance","weight":1,
    "effective_weight":0,"active":0,"requests":40,
    "check":{"type":"http","ok":false,"detail":"body mismatch\u001b[2J","time":"2025-01-02T03:04:04Z"}}]},
 {"name":"shop","mode":"http","scheduler":"round_robin","listen":null,"pool":true,"color":"red",
  "fallback":"127.0.0.1:8099","fallback_active":true,"fallback_requests":7,"request_rate":0,"error_rate":0,
  "real_servers":[{"name":"shop1","address":"10.0.3.1:80","color":"blue","health":"up","state":"maintenance","weight":1,
    "effective_weight":1,"check":{"type":"tcp","ok":true,"detail":"","latency_ns":0,"time":"2025-01-02T03:04:04Z"}}]},
 {"name":"db","mode":"tcp","scheduler":"least_conn","listen":["127.0.0.1:5432"],"color":"red","request_rate":0,"error_rate":0,
  "real_servers":[{"name":"db1","address":"10.0.1.1:5432","color":"red","health":"down","state":"ready","weight":1,
    "effective_weight":1,"check":{"type":"tcp","ok":false,"detail":"","latency_ns":0,"time":"0001-01-01T00:00:00Z"}}]}]}
`

const statusTable = `SERVICE web [BLUE] http 127.0.0.1:8080,[::1]:8080, active 3, queue 1, req/s 12.3, err/s 0.5
  NAME  ADDRESS      COLOR  HEALTH  STATE        WEIGHT  ACTIVE  REQUESTS  LAST CHECK
  web1  10.0.0.1:80  green  up      ready        5/10    2       60        HTTP 200 (agent: 75%)
  web2  10.0.0.2:80  blue   down    maintenance  0/1     0       40        body mismatch [2J

SERVICE shop [RED] http pool, active 0, queue 0, req/s 0.0, err/s 0.0, fallback 127.0.0.1:8099 [ACTIVE]
  NAME   ADDRESS      COLOR  HEALTH  STATE        WEIGHT  ACTIVE  REQUESTS  LAST CHECK
  shop1  10.0.3.1:80  blue   up      maintenance  1/1     0       0         ok

SERVICE db [RED] tcp 127.0.0.1:5432, active 0, queue 0, req/s 0.0, err/s 0.0
  NAME  ADDRESS        COLOR  HEALTH  STATE  WEIGHT  ACTIVE  REQUESTS  LAST CHECK
  db1   10.0.1.1:5432  red    down    ready  1/1     0       0         -
`

const eventsJSON = `{"events":[
 {"id":7,"time":"2025-01-02T03:04:05Z","kind":"health","service":"web","real_server":"web2","message":"down: timeout after 1s"},
 {"id":8,"time":"2025-01-02T03:05:00Z","kind":"reload","message":"configuration reloaded"}],"last_id":8}`

func eventsTable() string {
	t1, _ := time.Parse(time.RFC3339, "2025-01-02T03:04:05Z")
	t2, _ := time.Parse(time.RFC3339, "2025-01-02T03:05:00Z")
	return fmt.Sprintf(`TIME                 KIND    TARGET    MESSAGE
%s  health  web/web2  down: timeout after 1s
%s  reload  -         configuration reloaded
`, t1.Local().Format(time.DateTime), t2.Local().Format(time.DateTime))
}

const reloadRefused = `{"error":"configuration has 2 problems","problems":[
 {"file":"/etc/fulcrum.toml","line":4,"key":"virtual_service.scheduler","message":"unknown scheduler \"fastest\""},
 {"file":"/etc/fulcrum.toml","line":0,"key":"","message":"file is empty"}]}`

func TestCtlCommands(t *testing.T) {
	api := newFakeAPI(t, nil)
	t.Setenv("FULCRUM_USER", "")
	t.Setenv("FULCRUM_PASSWORD", "pw")
	const json = "application/json"
	tests := []struct {
		name       string
		args       []string
		status     int    // answered
		answer     string // answered
		wantMethod string
		wantURI    string
		wantCT     string
		wantBody   string
		wantCode   int
		wantStdout string // the whole of stdout
		wantStderr string // contained in stderr
	}{
		{"status", []string{"status"}, 200, statusJSON, "GET", "/api/v1/status", "", "", 0, statusTable, ""},
		{"status -json", []string{"status", "-json"}, 200, statusJSON, "GET", "/api/v1/status", "", "", 0, statusJSON, ""},
		{"status empty", []string{"status"}, 200, `{"services":[]}`, "GET", "/api/v1/status", "", "", 0, "no virtual services\n", ""},
		{"events", []string{"events"}, 200, eventsJSON, "GET", "/api/v1/events", "", "", 0, eventsTable(), ""},
		{"no events", []string{"events"}, 200, `{"events":[],"last_id":0}`, "GET", "/api/v1/events", "", "", 0, "no events\n", ""},
		{"drain", []string{"drain", "web/web1"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/web1/state", json, `{"state":"drain"}`, 0, "web/web1: drain\n", ""},
		{"maint", []string{"maint", "web/web1"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/web1/state", json, `{"state":"maintenance"}`, 0, "web/web1: maintenance\n", ""},
		{"maintenance", []string{"maintenance", "web/web1"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/web1/state", json, `{"state":"maintenance"}`, 0, "web/web1: maintenance\n", ""},
		{"ready", []string{"ready", "web/web1"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/web1/state", json, `{"state":"ready"}`, 0, "web/web1: ready\n", ""},
		{"names escaped", []string{"drain", "my web/a?b#c%"}, 200, `{}`, "PUT", "/api/v1/services/my%20web/servers/a%3Fb%23c%25/state", json, `{"state":"drain"}`, 0, "my web/a?b#c%: drain\n", ""},
		{"weight", []string{"weight", "web/web1", "5"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/web1/weight", json, `{"weight":5}`, 0, "web/web1: weight 5\n", ""},
		{"weight 0", []string{"weight", "web/web1", "0"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/web1/weight", json, `{"weight":0}`, 0, "web/web1: weight 0\n", ""},
		{"add", []string{"add", "web", "web4", "10.0.0.4:80", "7"}, 201, `{}`, "POST", "/api/v1/services/web/servers", json, `{"name":"web4","address":"10.0.0.4:80","weight":7}`, 0, "web/web4: added (10.0.0.4:80, weight 7)\n", ""},
		{"add VS/NAME", []string{"add", "web/web4", "[2001:db8::4]:80"}, 201, `{}`, "POST", "/api/v1/services/web/servers", json, `{"name":"web4","address":"[2001:db8::4]:80"}`, 0, "web/web4: added ([2001:db8::4]:80, default weight)\n", ""},
		{"remove", []string{"remove", "web/web1"}, 204, "", "DELETE", "/api/v1/services/web/servers/web1", json, "", 0, "web/web1: removed\n", ""},
		{"reload", []string{"reload"}, 200, `{"status":"reloaded"}`, "POST", "/api/v1/reload", json, "", 0, "configuration reloaded\n", ""},
		{"reload refused", []string{"reload"}, 422, reloadRefused, "POST", "/api/v1/reload", json, "", 1, "",
			"fulcrum ctl: 422 Unprocessable Entity: configuration has 2 problems\n" +
				"/etc/fulcrum.toml:4: virtual_service.scheduler: unknown scheduler \"fastest\"\n" +
				"/etc/fulcrum.toml:1: file is empty\n"},
		{"reload refused -json", []string{"-json", "reload"}, 422, reloadRefused, "POST", "/api/v1/reload", json, "", 1, reloadRefused + "\n", "configuration has 2 problems"},
		{"not found", []string{"drain", "web/nope"}, 404, `{"error":"real server \"nope\" not found in virtual service \"web\""}`, "PUT", "/api/v1/services/web/servers/nope/state", json, `{"state":"drain"}`, 1, "",
			"fulcrum ctl: 404 Not Found: real server \"nope\" not found in virtual service \"web\"\n"},
		{"bad weight refused", []string{"weight", "web/web1", "9"}, 400, `{"error":"weight 9 out of range"}`, "PUT", "/api/v1/services/web/servers/web1/weight", json, `{"weight":9}`, 1, "", "fulcrum ctl: 400 Bad Request: weight 9 out of range\n"},
		{"unauthorized", []string{"status"}, 401, `{"error":"invalid user or password"}`, "GET", "/api/v1/status", "", "", 1, "",
			"fulcrum ctl: 401 Unauthorized: invalid user or password\nfulcrum ctl: sent user \"admin\" (-user, $FULCRUM_USER) with the password from $FULCRUM_PASSWORD\n"},
		{"not the API", []string{"status"}, 502, "<html>Bad Gateway</html>\n<p>nginx</p>", "GET", "/api/v1/status", "", "", 1, "", "fulcrum ctl: 502 Bad Gateway: <html>Bad Gateway</html>\n"},
		{"answer not JSON", []string{"status"}, 200, "<html>", "GET", "/api/v1/status", "", "", 1, "", "fulcrum ctl: cannot read the answer of " + api.URL},
		{"redirect", []string{"status"}, 308, `{}`, "GET", "/api/v1/status", "", "", 1, "", "308"},
		{"-- ends flags", []string{"drain", "--", "web/-w1"}, 200, `{}`, "PUT", "/api/v1/services/web/servers/-w1/state", json, `{"state":"drain"}`, 0, "web/-w1: drain\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api.answerWith(tt.status, tt.answer)
			var stdout, stderr bytes.Buffer
			code := cmdCtl(append([]string{"-url", api.URL}, tt.args...), strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) || (tt.wantStderr == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantStderr)
			}
			got := api.requests()
			if len(got) != 1 {
				t.Fatalf("%d requests, want 1: %+v", len(got), got)
			}
			want := apiRequest{method: tt.wantMethod, uri: tt.wantURI, contentType: tt.wantCT, body: tt.wantBody,
				user: "admin", password: "pw", basic: true}
			if got[0] != want {
				t.Errorf("request\n %+v\nwant\n %+v", got[0], want)
			}
		})
	}
}

func TestCtlUsageErrors(t *testing.T) {
	api := newFakeAPI(t, nil)
	t.Setenv("FULCRUM_USER", "")
	t.Setenv("FULCRUM_PASSWORD", "pw")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"-h", []string{"-h"}, 0, "Usage: fulcrum ctl [flags] COMMAND [ARGS]"},
		{"-h lists commands", []string{"-h"}, 0, "weight VS/RS N"},
		{"help", []string{"help"}, 0, "drain VS/RS"},
		{"no command", nil, 2, "fulcrum ctl: no command\nUsage: fulcrum ctl"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", []string{"-frob", "status"}, 2, "flag provided but not defined: -frob"},
		{"drain without server", []string{"drain"}, 2, "fulcrum ctl drain: missing argument\nUsage: fulcrum ctl [flags] drain VS/RS"},
		{"drain no slash", []string{"drain", "web1"}, 2, `"web1": want VS/RS`},
		{"drain two slashes", []string{"drain", "web/a/b"}, 2, `"web/a/b": want VS/RS`},
		{"drain no service", []string{"drain", "/web1"}, 2, `want VS/RS`},
		{"drain no server", []string{"drain", "web/"}, 2, `want VS/RS`},
		{"drain extra", []string{"drain", "web/web1", "now"}, 2, `unexpected argument "now"`},
		{"status extra", []string{"status", "all"}, 2, `fulcrum ctl status: unexpected argument "all"`},
		{"reload extra", []string{"reload", "now"}, 2, `unexpected argument "now"`},
		{"weight missing", []string{"weight", "web/web1"}, 2, "missing argument"},
		{"weight not a number", []string{"weight", "web/web1", "heavy"}, 2, `weight "heavy": want a whole number 0..65535`},
		{"weight too big", []string{"weight", "web/web1", "65536"}, 2, `weight "65536": want a whole number 0..65535`},
		{"weight negative", []string{"weight", "web/web1", "-1"}, 2, "flag provided but not defined: -1"},
		{"add missing address", []string{"add", "web", "web4"}, 2, "missing argument"},
		{"add bad address", []string{"add", "web", "web4", "10.0.0.4"}, 2, `address "10.0.0.4": want IP:port`},
		{"add bad weight", []string{"add", "web", "web4", "10.0.0.4:80", "x"}, 2, `weight "x"`},
		{"add slash in name", []string{"add", "web/a/b", "10.0.0.4:80"}, 2, "want a virtual service and a new real server name"},
		{"bad -url scheme", []string{"-url", "ftp://127.0.0.1:9080", "status"}, 2, `-url "ftp://127.0.0.1:9080": scheme "ftp": want http or https`},
		{"-url with query", []string{"-url", "http://127.0.0.1:9080/?x=1", "status"}, 2, "want scheme://host:port[/path] only"},
		{"-timeout 0", []string{"-timeout", "0", "status"}, 2, "-timeout 0s: must be > 0"},
		{"empty -user", []string{"-user", "", "status"}, 2, "-user: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"-url", api.URL}, tt.args...)
			if strings.HasPrefix(tt.name, "bad -url") || strings.HasPrefix(tt.name, "-url") {
				args = tt.args
			}
			code := cmdCtl(args, strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if got := api.requests(); len(got) > 0 {
				t.Errorf("a bad command line made requests: %+v", got)
			}
		})
	}
}

func TestCtlCredentials(t *testing.T) {
	api := newFakeAPI(t, nil)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("from-file\r\nignored\n"), 0o600)
	emptyFile := filepath.Join(dir, "empty")
	os.WriteFile(emptyFile, []byte("\n"), 0o600)
	tests := []struct {
		name                 string
		envUser, envPassword string
		args                 []string
		wantCode             int
		wantUser, wantPw     string // "" if no request is expected
		wantStderr           string
	}{
		{"env", "", "from-env", nil, 0, "admin", "from-env", ""},
		{"env user", "ops", "from-env", nil, 0, "ops", "from-env", ""},
		{"-user beats env", "ops", "from-env", []string{"-user", "root"}, 0, "root", "from-env", ""},
		{"-password-file", "", "", []string{"-password-file", pwFile}, 0, "admin", "from-file", ""},
		{"-password-file beats env", "", "from-env", []string{"-password-file", pwFile}, 0, "admin", "from-file", ""},
		{"empty -password-file", "", "from-env", []string{"-password-file", emptyFile}, 1, "", "", "the first line is empty"},
		{"missing -password-file", "", "", []string{"-password-file", filepath.Join(dir, "nope")}, 1, "", "", "no such file"},
		{"no password", "", "", nil, 2, "", "", "no password: set FULCRUM_PASSWORD, give -password-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("FULCRUM_USER", tt.envUser)
			t.Setenv("FULCRUM_PASSWORD", tt.envPassword)
			api.answerWith(200, `{"status":"reloaded"}`)
			var stdout, stderr bytes.Buffer
			args := append(append([]string{"-url", api.URL}, tt.args...), "reload")
			code := cmdCtl(args, strings.NewReader("not a terminal\n"), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			got := api.requests()
			if tt.wantUser == "" {
				if len(got) > 0 {
					t.Errorf("requests %+v, want none", got)
				}
				return
			}
			if len(got) != 1 || !got[0].basic || got[0].user != tt.wantUser || got[0].password != tt.wantPw {
				t.Errorf("requests %+v, want one as %s:%s", got, tt.wantUser, tt.wantPw)
			}
		})
	}
}

func TestCtlPasswordPrompt(t *testing.T) {
	api := newFakeAPI(t, nil)
	t.Setenv("FULCRUM_USER", "")
	t.Setenv("FULCRUM_PASSWORD", "")
	pty := openPTY(t)
	before := pty.termios(t)
	stderr := newPromptWriter()
	var stdout bytes.Buffer
	done := make(chan int)
	go func() { done <- cmdCtl([]string{"-url", api.URL, "drain", "web/web1"}, pty.slave, &stdout, stderr) }()
	stderr.waitPrompt(t)
	pty.write(t, "typed-Pw\n")
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d, want 0 (stderr %q)", code, stderr.String())
	}
	if want := "Password for admin at " + api.URL + ": \n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
	if got := api.requests(); len(got) != 1 || got[0].password != "typed-Pw" {
		t.Errorf("requests %+v, want one with the typed password", got)
	}
	if after := pty.termios(t); after.Lflag != before.Lflag {
		t.Fatalf("terminal not restored: lflag %#x, was %#x", after.Lflag, before.Lflag)
	}
	if echoed := pty.echoed(t); strings.Contains(echoed, "typed-Pw") {
		t.Errorf("the password was echoed: %q", echoed)
	}
}

func TestCtlConnectionErrors(t *testing.T) {
	t.Setenv("FULCRUM_PASSWORD", "pw")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	// slow answers only when the client has given up.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()

	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"refused", []string{"-url", closed, "status"},
			"fulcrum ctl: cannot connect to " + closed + ": connection refused; is fulcrum running with an [admin] listen address there?"},
		{"timeout", []string{"-url", slow.URL, "-timeout", "100ms", "status"},
			"fulcrum ctl: no answer from " + slow.URL + " within 100ms (-timeout)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := cmdCtl(tt.args, strings.NewReader(""), &stdout, &stderr); code != 1 {
				t.Errorf("exit code %d, want 1 (stderr %q)", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

// writeAdminConfig writes a minimal valid configuration whose [admin]
// table holds admin (its listen address and TLS keys) and returns its path.
func writeAdminConfig(t *testing.T, admin string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	text := `[[virtual_service]]
name = "web"
listen = "127.0.0.1:8080"

  [[virtual_service.real_server]]
  address = "127.0.0.1:9001"
`
	if admin != "" {
		text += "\n[admin]\n" + admin + "\n[[admin.user]]\nname = \"admin\"\npassword_hash = \"" + string(hash) + "\"\n"
	}
	path := filepath.Join(t.TempDir(), "fulcrum.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCtlConfigFile(t *testing.T) {
	t.Setenv("FULCRUM_USER", "")
	t.Setenv("FULCRUM_PASSWORD", "pw")
	certFile, _ := filepath.Abs("../../config/testdata/test-only-admin.crt")
	keyFile, _ := filepath.Abs("../../config/testdata/test-only-admin.key")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	plain := newFakeAPI(t, nil)
	secure := newFakeAPI(t, &cert) // its certificate names localhost only
	_, plainPort, _ := net.SplitHostPort(plain.Listener.Addr().String())
	tlsKeys := fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", certFile, keyFile)
	other := httptest.NewTLSServer(http.NotFoundHandler()) // another self-signed certificate
	defer other.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()

	tests := []struct {
		name       string
		admin      string // the [admin] table; "" for none
		args       []string
		api        *fakeAPI // that should get the request; nil for none
		wantCode   int
		wantStderr string
	}{
		{"listen", fmt.Sprintf("listen = %q", plain.Listener.Addr()), nil, plain, 0, ""},
		{"wildcard listen", fmt.Sprintf("listen = \":%s\"", plainPort), nil, plain, 0, ""},
		{"0.0.0.0 listen", fmt.Sprintf("listen = \"0.0.0.0:%s\"", plainPort), nil, plain, 0, ""},
		{"-url beats -c", fmt.Sprintf("listen = %q", closedAddr), []string{"-url", plain.URL}, plain, 0, ""},
		{"tls_cert is trusted", fmt.Sprintf("listen = %q\n%s", secure.Listener.Addr(), tlsKeys), nil, secure, 0, ""},
		{"tls_cert trusted with -url", fmt.Sprintf("listen = %q\n%s", closedAddr, tlsKeys), []string{"-url", secure.URL}, secure, 0, ""},
		{"other certificate refused", fmt.Sprintf("listen = %q\n%s", closedAddr, tlsKeys), []string{"-url", other.URL}, nil, 1,
			"certificate signed by unknown authority (and it is not the configuration's tls_cert)"},
		{"no [admin]", "", nil, nil, 1, "no [admin] listen address: the admin API is off"},
		{"invalid config", "listen = \"nowhere\"", nil, nil, 1, `admin.listen: invalid address "nowhere"`},
		{"missing config", "-", nil, nil, 1, "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plain.answerWith(200, `{"services":[]}`)
			secure.answerWith(200, `{"services":[]}`)
			path := writeAdminConfig(t, tt.admin)
			if tt.admin == "-" {
				path = filepath.Join(t.TempDir(), "nope.toml")
			}
			var stdout, stderr bytes.Buffer
			code := cmdCtl(append(append([]string{"-c", path}, tt.args...), "status"), strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			for _, f := range []*fakeAPI{plain, secure} {
				n := len(f.requests())
				if want := map[bool]int{true: 1, false: 0}[f == tt.api]; n != want {
					t.Errorf("%s got %d requests, want %d", f.URL, n, want)
				}
			}
			if tt.api != nil && stdout.String() != "no virtual services\n" {
				t.Errorf("stdout %q", stdout.String())
			}
		})
	}
}

// Without -c, a self-signed certificate needs -k.
func TestCtlInsecure(t *testing.T) {
	t.Setenv("FULCRUM_PASSWORD", "pw")
	api := &fakeAPI{status: 200, answer: `{"services":[]}`}
	api.Server = httptest.NewTLSServer(http.HandlerFunc(api.serve))
	defer api.Close()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"verified", []string{"-url", api.URL, "status"}, 1, "certificate signed by unknown authority; with -c the configuration's tls_cert is trusted, -k skips the check"},
		{"-k", []string{"-k", "-url", api.URL, "status"}, 0, ""},
		{"https to http", []string{"-url", strings.Replace(api.URL, "https", "http", 1), "status"}, 1, "fulcrum ctl: 400 Bad Request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := cmdCtl(tt.args, strings.NewReader(""), &stdout, &stderr); code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestCtlAdminURL(t *testing.T) {
	tests := []struct {
		listen, cert, want string
	}{
		{"127.0.0.1:9080", "", "http://127.0.0.1:9080"},
		{":9080", "", "http://127.0.0.1:9080"},
		{"0.0.0.0:9080", "", "http://127.0.0.1:9080"},
		{"[::]:9080", "", "http://[::1]:9080"},
		{"[::1]:9080", "", "http://[::1]:9080"},
		{"10.1.2.3:9443", "admin.crt", "https://10.1.2.3:9443"},
		{"[::]:9443", "admin.crt", "https://[::1]:9443"},
	}
	for _, tt := range tests {
		t.Run(tt.listen+tt.cert, func(t *testing.T) {
			got, err := adminURL(adminOf(tt.listen, tt.cert))
			if err != nil || got != tt.want {
				t.Errorf("adminURL(%q) = %q, %v; want %q", tt.listen, got, err, tt.want)
			}
		})
	}
}

func adminOf(listen, cert string) config.Admin { return config.Admin{Listen: listen, TLSCert: cert} }

func TestCtlParseAdminURL(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"http://127.0.0.1:9080", "http://127.0.0.1:9080", ""},
		{"127.0.0.1:9080", "http://127.0.0.1:9080", ""},
		{"https://lb.example.com:9443/", "https://lb.example.com:9443", ""},
		{"https://lb.example.com/fulcrum/", "https://lb.example.com/fulcrum", ""},
		{"ftp://lb", "", `scheme "ftp"`},
		{"http://", "", "no host"},
		{"http://admin:pw@lb:9080", "", "give the user with -user"},
		{"http://lb:9080/#x", "", "want scheme://host:port[/path] only"},
		{"http://lb:port", "", "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseAdminURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("parseAdminURL(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseAdminURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}
