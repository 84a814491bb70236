package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/proxy"
)

// syncConfig is a valid configuration; node names the [ha] priority and
// admin listen, which a push must not move between the nodes.
func syncConfig(node int, backend string) string {
	return fmt.Sprintf(`# node %[1]d
[global]
log_level = "info"

[[virtual_service]]
name = "web"
listen = "127.0.0.1:18080"

[[virtual_service.real_server]]
address = %[2]q

[ha]
interface = "lo"
vrid = 51
priority = %[3]d
floating_ips = ["10.0.0.21/24"]

[admin]
listen = "127.0.0.1:%[4]d"

[[admin.user]]
name = "peer"
password_hash = %[5]q
`, node, backend, 100+node, 9080+node, testHash())
}

func TestSplitTables(t *testing.T) {
	tests := []struct {
		name   string
		doc    string
		tables []string
		err    string
	}{
		{name: "preamble only", doc: "a = 1\n", tables: []string{""}},
		{name: "headers", doc: "a = 1\n[ha]\nb = 2\n[[admin.user]]\nc = 3\n[\"q.x\".y]\n",
			tables: []string{"", "ha", "admin", "q.x"}},
		{name: "indented header", doc: "  [ha] # comment [x]\nb = 1\n", tables: []string{"", "ha"}},
		{name: "brackets in values", doc: "[a]\nx = [\n [1, 2],\n]\ns = \"[ha]\"\nm = '''\n[ha]\n'''\n[ha]\n",
			tables: []string{"", "a", "ha"}},
		{name: "multi-line basic string", doc: "m = \"\"\"\n[ha]\\\"\"\"\"\n[b]\n", tables: []string{"", "b"}},
		{name: "unterminated string", doc: "a = \"x\n", err: "line 1: unterminated string"},
		{name: "unterminated multi-line", doc: "a = '''x\n", err: "line 1: unterminated multi-line string"},
		{name: "unterminated header", doc: "[ha\n", err: "line 1: unterminated table header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks, err := splitTables([]byte(tt.doc))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			var text strings.Builder
			for _, b := range blocks {
				got = append(got, b.table)
				text.Write(b.text)
			}
			if strings.Join(got, ",") != strings.Join(tt.tables, ",") {
				t.Errorf("tables = %q, want %q", got, tt.tables)
			}
			if text.String() != tt.doc {
				t.Errorf("blocks do not give the document back:\n%s", text.String())
			}
		})
	}
}

func TestMergeLocal(t *testing.T) {
	local := syncConfig(2, "10.0.0.1:80")
	tests := []struct {
		name   string
		pushed string
		want   []string // substrings of the result
		err    string
	}{
		{name: "keeps own ha and admin", pushed: syncConfig(1, "10.0.0.9:80"),
			want: []string{"# node 1", `address = "10.0.0.9:80"`, "priority = 102", "127.0.0.1:9082"}},
		{name: "pushed without ha", pushed: "[[virtual_service]]\nname = \"x\"\n",
			want: []string{`name = "x"`, "priority = 102", "[[admin.user]]"}},
		{name: "dotted ha keys elsewhere", pushed: "ha.vrid = 9\n[[virtual_service]]\nname = \"x\"\n",
			err: "this node's [ha]"},
		{name: "syntax", pushed: "[ha\n", err: "pushed configuration:1: syntax:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mergeLocal([]byte(tt.pushed), []byte(local))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(got), w) {
					t.Errorf("result lacks %q:\n%s", w, got)
				}
			}
			for _, bad := range []string{"priority = 101", "127.0.0.1:9081"} {
				if strings.Contains(string(got), bad) {
					t.Errorf("result keeps the pusher's %q:\n%s", bad, got)
				}
			}
		})
	}
}

// syncFixture is a fixture with sync enabled on a configuration file.
func syncFixture(t *testing.T, master bool) (*fixture, string, *[]proxy.StickUpdate) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "fulcrum.toml")
	if err := os.WriteFile(path, []byte(syncConfig(2, "10.0.0.1:80")), 0o640); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []proxy.StickUpdate
	f.s.EnableSync(SyncOptions{ConfigPath: path, Master: func() bool { return master },
		ApplyStick: func(b []proxy.StickUpdate) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, u := range b {
				if u.Service == "web" {
					got = append(got, u)
					n++
				}
			}
			if n < len(b) {
				return n, fmt.Errorf("%d skipped: %w", len(b)-n, proxy.ErrInvalid)
			}
			return n, nil
		}})
	return f, path, &got
}

func TestSyncConfigEndpoint(t *testing.T) {
	body := func(cfg string) string {
		b, _ := json.Marshal(syncConfigRequest{Config: cfg})
		return string(b)
	}
	tests := []struct {
		name      string
		master    bool
		disabled  bool
		body      string
		reloadErr error
		status    int
		want      string // in the response
		file      string // in the file afterwards
	}{
		{name: "reloaded", body: body(syncConfig(1, "10.0.0.9:80")), status: 200, want: `"reloaded"`,
			file: `address = "10.0.0.9:80"`},
		{name: "unchanged", body: body(syncConfig(2, "10.0.0.1:80")), status: 200, want: `"unchanged"`},
		{name: "master refuses", master: true, body: body(syncConfig(1, "10.0.0.9:80")), status: 409,
			want: "HA Master", file: `address = "10.0.0.1:80"`},
		{name: "disabled", disabled: true, body: body(syncConfig(1, "10.0.0.9:80")), status: 404, want: "not enabled"},
		{name: "bad config", body: body(strings.Replace(syncConfig(1, "x"), `"x"`, `"nope"`, 1)), status: 422,
			want: "virtual_service.real_server.address", file: `address = "10.0.0.1:80"`},
		{name: "reload fails: file restored", body: body(syncConfig(1, "10.0.0.9:80")),
			reloadErr: errors.New("bind: address in use"), status: 500, want: "address in use", file: `address = "10.0.0.1:80"`},
		{name: "not json", body: "[ha]", status: 400, want: "bad JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, path, _ := syncFixture(t, tt.master)
			if tt.disabled {
				f.s.sync.state.Store(nil)
			}
			f.rt.reloadErr = tt.reloadErr
			r := f.do(t, req{method: "PUT", path: "/api/v1/sync/config", basic: true, json: true, body: tt.body})
			if r.status != tt.status || !strings.Contains(r.body, tt.want) {
				t.Fatalf("got %d %s, want %d with %q", r.status, r.body, tt.status, tt.want)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tt.file) {
				t.Errorf("file lacks %q:\n%s", tt.file, data)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
				t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

func TestSyncBodyLimit(t *testing.T) {
	f, _, _ := syncFixture(t, false)
	big := strings.Repeat("# padding\n", 20000) + syncConfig(1, "10.0.0.9:80") // > maxBodyBytes
	b, _ := json.Marshal(syncConfigRequest{Config: big})
	r := f.do(t, req{method: "PUT", path: "/api/v1/sync/config", basic: true, json: true, body: string(b)})
	if r.status != 200 {
		t.Fatalf("a %d-byte config: %d %s", len(b), r.status, r.body)
	}
}

func TestSyncStickEndpoint(t *testing.T) {
	f, _, got := syncFixture(t, false)
	r := f.do(t, req{method: "POST", path: "/api/v1/sync/stick", basic: true, json: true,
		body: `{"entries":[{"service":"web","method":"source_ip","key":"10.1.2.3","server":"a","idle_ms":1500},
		{"service":"gone","method":"header","key":"k","server":"b","idle_ms":0}]}`})
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["applied"] != 1.0 || m["skipped"] != 1.0 || !strings.Contains(fmt.Sprint(m["error"]), "skipped") {
		t.Errorf("answer = %v", m)
	}
	want := f.clock.Now().Add(-1500 * time.Millisecond)
	if len(*got) != 1 || (*got)[0].Key != "10.1.2.3" || !(*got)[0].Used.Equal(want) {
		t.Errorf("applied %+v, want used %v", *got, want)
	}
}

// TestPusher runs the sending side against the receiving side.
func TestPusher(t *testing.T) {
	f, path, got := syncFixture(t, false)
	p, err := NewPusher(PusherConfig{Peer: f.ts.URL, User: testUser, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.PushConfig(ctx, []byte(syncConfig(1, "10.0.0.9:80"))); err != nil {
		t.Fatalf("PushConfig: %v", err)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "10.0.0.9:80") {
		t.Errorf("config not applied:\n%s", data)
	}
	// A bad config is refused at once with the problems.
	err = p.PushConfig(ctx, []byte(strings.Replace(syncConfig(1, "x"), `"x"`, `"nope"`, 1)))
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Status != 422 || len(pe.Problems) == 0 {
		t.Fatalf("bad config: %v", err)
	}
	// A lost session logs in again.
	p.mu.Lock()
	p.csrf = "stale"
	p.mu.Unlock()
	f.s.auth.mu.Lock()
	clear(f.s.auth.sessions)
	f.s.auth.mu.Unlock()
	batch := make([]proxy.StickUpdate, 300) // two requests
	for i := range batch {
		batch[i] = proxy.StickUpdate{Service: "web", Method: "source_ip", Key: fmt.Sprintf("10.0.%d.%d", i/256, i%256),
			Server: "a", Used: time.Now()}
	}
	n, err := p.PushStick(ctx, batch)
	if err != nil || n != 300 || len(*got) != 300 {
		t.Fatalf("PushStick: %d, %v; applied %d", n, err, len(*got))
	}
	if st := p.Stats(); st.Sent != 300 || st.Failed != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPusherRun(t *testing.T) {
	f, path, got := syncFixture(t, false)
	p, err := NewPusher(PusherConfig{Peer: strings.TrimPrefix(f.ts.URL, "http://"), User: testUser, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	feed := make(chan proxy.StickUpdate, 10)
	done := make(chan struct{})
	go func() { p.Run(ctx, feed); close(done) }()
	p.QueueConfig([]byte(syncConfig(1, "10.0.0.7:80")))
	feed <- proxy.StickUpdate{Service: "web", Method: "header", Key: "k", Server: "a", Used: time.Now()}
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), "10.0.0.7:80") && p.Stats().Sent == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not pushed: stats %+v, file:\n%s", p.Stats(), data)
		}
		time.Sleep(10 * time.Millisecond) // polls a condition
	}
	cancel()
	<-done
	if len(*got) != 1 {
		t.Errorf("applied %v", *got)
	}
}

func TestPusherRetriesUnreachable(t *testing.T) {
	p, err := NewPusher(PusherConfig{Peer: "127.0.0.1:1", User: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	err = p.PushConfig(ctx, []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline after retries", err)
	}
}

func TestNewPusherErrors(t *testing.T) {
	for _, c := range []PusherConfig{{}, {Peer: "h:1"}, {Peer: "h:1", User: "u"}} {
		if _, err := NewPusher(c); err == nil {
			t.Errorf("NewPusher(%+v): no error", c)
		}
	}
	p, _ := NewPusher(PusherConfig{Peer: "h:1", User: "u", Password: "p", TLS: true})
	if p.base != "https://h:1" {
		t.Errorf("base = %q", p.base)
	}
}
