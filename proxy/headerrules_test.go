package proxy

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
)

func TestCompileRules(t *testing.T) {
	if compileRules(&config.VirtualService{}) != nil {
		t.Error("no rules compiled to something")
	}
	vs := &config.VirtualService{
		RequestHeaders: config.HeaderRules{
			Set:    map[string]string{"x-b": "2", "X-A": "1", "Connection": "close", "Content-Length": "0"},
			Remove: []string{"X-Debug", "Host", "Transfer-Encoding", "TE"},
		},
		ResponseHeaders: config.HeaderRules{Remove: []string{"Server", "Keep-Alive"}},
	}
	r := compileRules(vs)
	var set []string
	for _, f := range r.req.set {
		set = append(set, f.canon+"="+f.value)
	}
	// Sorted by name as configured; the proxy's own fields left out.
	if want := []string{"X-A=1", "X-B=2"}; !reflect.DeepEqual(set, want) {
		t.Errorf("request set %v, want %v", set, want)
	}
	if len(r.req.remove) != 1 || r.req.remove[0].lower != "x-debug" || r.req.remove[0].canon != "X-Debug" {
		t.Errorf("request remove %+v, want X-Debug alone (Host, framing and hop-by-hop fields are the proxy's)", r.req.remove)
	}
	if len(r.resp.remove) != 1 || r.resp.remove[0].lower != "server" {
		t.Errorf("response remove %+v, want Server alone", r.resp.remove)
	}
	// A request's Host may be set, not removed.
	r = compileRules(&config.VirtualService{RequestHeaders: config.HeaderRules{Set: map[string]string{"Host": "in.test"}}})
	if len(r.req.set) != 1 || r.resp != nil {
		t.Errorf("Host set: %+v", r)
	}
}

// rules compiles request rules from set (name, value pairs) and remove.
func rules(remove []string, set ...string) *serviceRules {
	hr := config.HeaderRules{Set: map[string]string{}, Remove: remove}
	for i := 0; i+1 < len(set); i += 2 {
		hr.Set[set[i]] = set[i+1]
	}
	return compileRules(&config.VirtualService{RequestHeaders: hr, ResponseHeaders: hr})
}

// TestHeaderRulesHTTP1 checks the request head as it goes to the real
// server with the listening service's rules, then the pool's.
func TestHeaderRulesHTTP1(t *testing.T) {
	tests := []struct {
		name        string
		front, pool *serviceRules
		want        []string // fields of the head, in order, after the request line
	}{
		{name: "none", want: []string{"Host: www.example.com", "X-Env: client", "X-Debug: 1", "X-Keep: k"}},
		{name: "front", front: rules([]string{"x-debug"}, "X-Env", "prod"),
			want: []string{"Host: www.example.com", "X-Keep: k", "X-Env: prod"}},
		{name: "pool after front", front: rules(nil, "X-Env", "prod", "X-Front", "1"), pool: rules([]string{"X-Front"}, "X-Env", "api"),
			want: []string{"Host: www.example.com", "X-Debug: 1", "X-Keep: k", "X-Env: api"}},
		{name: "pool sets what front removes", front: rules([]string{"X-Keep"}), pool: rules(nil, "X-Keep", "pool"),
			want: []string{"Host: www.example.com", "X-Env: client", "X-Debug: 1", "X-Keep: pool"}},
		{name: "host set", front: rules(nil, "Host", "internal.test"),
			want: []string{"X-Env: client", "X-Debug: 1", "X-Keep: k", "Host: internal.test"}},
		{name: "proxy's fields untouched", front: rules([]string{"X-Forwarded-For", "Connection"}),
			want: []string{"Host: www.example.com", "X-Env: client", "X-Debug: 1", "X-Keep: k", "X-Forwarded-For: 127.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := requestFrom(t, "127.0.0.1", nil, "X-Env: client\r\nX-Debug: 1\r\nX-Keep: k\r\n")
			cc.svc = &Service{}
			cc.frontRules, cc.poolRules = tt.front, tt.pool
			if strings.Contains(tt.name, "proxy's") {
				cc.cfg.ForwardedFor = true
			}
			var out bytes.Buffer
			cc.toSrv.reset(captureConn{out: &out}, nil)
			cc.writeRequestHead(&cc.toSrv)
			cc.toSrv.flush()
			lines := strings.Split(strings.TrimSuffix(out.String(), "\r\n\r\n"), "\r\n")[1:]
			var got []string
			for _, l := range lines {
				if !strings.HasPrefix(l, "X-Forwarded-Proto") && !strings.HasPrefix(l, "X-Forwarded-Host") {
					got = append(got, l)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("head fields:\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestHeaderRulesApply(t *testing.T) {
	front := rules([]string{"X-Debug"}, "X-Env", "prod", "X-Front", "1", "Host", "in.test")
	pool := rules([]string{"X-Front"}, "X-Env", "api")
	h := http.Header{"X-Debug": {"1"}, "X-Env": {"client"}, "X-Other": {"o"}}
	host := "www.example.com"
	front.request().apply(h, &host)
	pool.request().apply(h, &host)
	want := http.Header{"X-Env": {"api"}, "X-Other": {"o"}}
	if !reflect.DeepEqual(h, want) || host != "in.test" {
		t.Errorf("header %v host %q, want %v in.test", h, host, want)
	}
	// Responses: Host is a field like any.
	h = http.Header{}
	front.response().apply(h, nil)
	if h.Get("Host") != "in.test" {
		t.Errorf("response header %v", h)
	}
	// An append to a set field leaves the shared value alone.
	h = http.Header{}
	pool.response().apply(h, nil)
	h.Add("X-Env", "more")
	if v := pool.resp.set[0].values; len(v) != 1 || v[0] != "api" {
		t.Errorf("the rule's shared value changed: %v", v)
	}
}

// BenchmarkHeaderRules is the cost of two rules each way on an HTTP/1.1
// request head; it allocates nothing.
func BenchmarkHeaderRules(b *testing.B) {
	cc := &clientConn{cfg: &config.VirtualService{}, svc: &Service{}}
	if err := cc.req.parse([]byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Debug: 1\r\n\r\n")); err != nil {
		b.Fatal(err)
	}
	cc.frontRules = rules([]string{"X-Debug"}, "X-Env", "prod")
	cc.poolRules = rules([]string{"X-Front"}, "X-Pool", "api")
	var out bytes.Buffer
	cc.toSrv.reset(captureConn{out: &out}, nil)
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		cc.writeRequestHead(&cc.toSrv)
		cc.toSrv.flush()
	}
}
