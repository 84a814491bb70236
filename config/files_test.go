package config

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestGoodFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/good-*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := Load(file)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.File != file {
				t.Errorf("File = %q, want %q", c.File, file)
			}
		})
	}
}

// exampleDir is where the examples keep certificates and keys, as a
// production host would.
const exampleDir = "/etc/fulcrum/"

var exampleFile = regexp.MustCompile(`/etc/fulcrum/([A-Za-z0-9._-]+)`)

// TestExamples keeps the shipped example configurations valid. Validation
// loads the certificate and key files an example names, which do not exist
// under /etc/fulcrum/ here, so a temporary directory stands in for it: for
// each NAME.key it holds the key of a fresh pair for the DNS name NAME, and
// for any other NAME.ext that pair's certificate (valid now). Every check
// still runs on them, the pairing and the dates included; only the directory
// differs, and the line numbers do not change.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if refs := exampleFile.FindAllSubmatch(data, -1); len(refs) > 0 {
				dir := t.TempDir()
				type pair struct{ cert, key []byte }
				pairs := map[string]pair{}
				now := time.Now()
				for _, m := range refs {
					name := string(m[1])
					ext := filepath.Ext(name)
					base := strings.TrimSuffix(name, ext)
					p, ok := pairs[base]
					if !ok {
						p.cert, p.key = newKeyPair(t, base, now.Add(-time.Hour), now.Add(24*time.Hour))
						pairs[base] = p
					}
					content := p.cert
					if ext == ".key" {
						content = p.key
					}
					writeFile(t, filepath.Join(dir, name), content)
				}
				data = bytes.ReplaceAll(data, []byte(exampleDir), []byte(dir+"/"))
			}
			if _, err := Parse(file, data); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

func TestGoodFull(t *testing.T) {
	c, err := Load("testdata/good-full.toml")
	if err != nil {
		t.Fatal(err)
	}
	const hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK"
	defaultTimeouts := Timeouts{
		Connect: DefaultConnect, Client: DefaultClient, ClientHeader: DefaultClientHeader, Server: DefaultServer,
	}
	defaultTLS := TLS{MinVersion: DefaultTLSMinVersion, ALPN: []string{ProtoH2, ProtoHTTP1}, ClientAuth: DefaultClientAuth}
	defaultHealthCheck := HealthCheck{
		Type: DefaultCheckType, Method: DefaultCheckMethod, Path: DefaultCheckPath,
		ExpectStatus: StatusRanges{{200, 399}}, Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout,
		Rise: DefaultRise, Fall: DefaultFall,
	}
	defaultRateLimit := RateLimit{Per: DefaultRatePer}
	defaultPersistence := Persistence{
		Method: DefaultPersistMethod, Timeout: DefaultPersistTimeout, SourceMask: DefaultSourceMask,
		SourceMask6: DefaultSourceMask6, MaxEntries: DefaultMaxEntries, InspectDelay: DefaultInspectDelay,
	}
	want := &Config{
		File: "testdata/good-full.toml",
		Global: Global{
			LogLevel:   "debug",
			LogFormat:  "json",
			AccessLog:  false,
			Grace:      10 * time.Second,
			EventLoops: 2,
		},
		Admin: Admin{
			Listen:      "127.0.0.1:9080",
			TLSCert:     "testdata/test-only-admin.crt",
			TLSKey:      "testdata/test-only-admin.key",
			MetricsAuth: false,
			Users: []*AdminUser{
				{Name: "admin", PasswordHash: hash, Line: 154},
				{Name: "ops.viewer-2", PasswordHash: hash, Line: 158},
			},
			Line: 148,
		},
		VirtualServices: []*VirtualService{
			{
				Name:            "web",
				Listen:          []string{"127.0.0.1:443", "127.0.0.2:443"},
				Mode:            ModeHTTP,
				Scheduler:       "weighted_round_robin",
				ForwardedFor:    false,
				MaxConns:        10000,
				Retries:         3,
				QueueTimeout:    2 * time.Second,
				ForwardedHeader: true,
				AcceptProxy:     true,
				TrustedProxies:  []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"},
				Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
					netip.MustParsePrefix("2001:db8::/32")},
				Transparent: true,
				Timeouts: Timeouts{
					Connect:      time.Second,
					Client:       30 * time.Second,
					ClientHeader: 5 * time.Second,
					Server:       2 * time.Minute,
				},
				HealthCheck: HealthCheck{
					Type:          CheckHTTPS,
					Method:        "HEAD",
					Path:          "/health?full=1",
					Host:          "www.example.com:8443",
					ExpectStatus:  StatusRanges{{200, 200}, {300, 302}, {400, 499}},
					ExpectBody:    `^OK\b`,
					TLSVerify:     true,
					Port:          8443,
					Interval:      500 * time.Millisecond,
					Timeout:       300 * time.Millisecond,
					Rise:          1,
					Fall:          5,
					AgentPort:     9999,
					SlowStart:     30 * time.Second,
					ObserveErrors: 10,
				},
				Persistence: Persistence{
					Method:       PersistCookie,
					Timeout:      DefaultPersistTimeout,
					CookieName:   "LB_web",
					CookieSecret: "0123456789abcdef0123456789abcdef",
					SourceMask:   DefaultSourceMask,
					SourceMask6:  DefaultSourceMask6,
					MaxEntries:   DefaultMaxEntries,
					InspectDelay: DefaultInspectDelay,
				},
				TLS: TLS{
					Certificates: []*Certificate{
						{Cert: "testdata/test-only-admin.crt", Key: "testdata/test-only-admin.key", Line: 54},
					},
					MinVersion:   "1.3",
					ALPN:         []string{ProtoHTTP1},
					ClientCA:     "testdata/test-only-admin.crt",
					ClientAuth:   ClientAuthRequire,
					RedirectHTTP: "127.0.0.1:80",
				},
				RealServers: []*RealServer{
					{
						Name: "web1", Address: "10.0.0.1:8080", Weight: 3, MaxConns: 100,
						TLS: true, TLSServerName: "web1.example.com", TLSVerify: true, TLSCA: "testdata/test-only-admin.crt",
						Protocol: ProtoHTTP1, State: StateMaintenance, Line: 63,
					},
					{Name: "web2", Address: "10.0.0.2:8080", Weight: 0, TLS: true, Protocol: ProtoHTTP1, State: StateDrain, SendProxy: SendProxyV2, Line: 74},
				},
				RateLimit: defaultRateLimit,
				Line:      10,
			},
			{
				Name:         "cache",
				Listen:       []string{":6379"},
				Mode:         ModeTCP,
				Scheduler:    "least_conn",
				ForwardedFor: true,
				Retries:      0,
				QueueTimeout: DefaultQueueTimeout,
				Timeouts: Timeouts{
					Connect:      500 * time.Millisecond,
					Client:       time.Hour,
					ClientHeader: DefaultClientHeader,
					Server:       time.Hour,
				},
				HealthCheck: HealthCheck{
					Type:         CheckSendExpect,
					Method:       DefaultCheckMethod,
					Path:         DefaultCheckPath,
					ExpectStatus: StatusRanges{{200, 399}},
					Send:         "PING\r\n",
					Expect:       `^\+PONG\r\n`,
					Interval:     DefaultCheckInterval,
					Timeout:      DefaultCheckTimeout,
					Rise:         DefaultRise,
					Fall:         DefaultFall,
				},
				Persistence: Persistence{
					Method:       PersistSourceIP,
					Timeout:      time.Hour,
					SourceMask:   24,
					SourceMask6:  48,
					MaxEntries:   50000,
					InspectDelay: DefaultInspectDelay,
				},
				TLS: defaultTLS,
				RealServers: []*RealServer{
					{Name: "cache1", Address: "10.0.1.1:6379", Weight: 1, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 93},
					{Name: "cache2", Address: "10.0.1.2:6379", Weight: 2, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 94},
				},
				RateLimit: defaultRateLimit,
				Line:      83,
			},
			{
				Name:         "api",
				Listen:       []string{"127.0.0.1:8080"},
				Mode:         ModeHTTP,
				Scheduler:    "header_hash",
				HashHeader:   "X-Tenant",
				ForwardedFor: true,
				Retries:      DefaultRetries,
				QueueTimeout: DefaultQueueTimeout,
				Timeouts:     defaultTimeouts,
				HealthCheck:  defaultHealthCheck,
				Persistence: Persistence{
					Method:       PersistHeader,
					Timeout:      5 * time.Minute,
					SourceMask:   DefaultSourceMask,
					SourceMask6:  DefaultSourceMask6,
					Header:       "X-Session",
					MaxEntries:   2000,
					InspectDelay: DefaultInspectDelay,
				},
				TLS: defaultTLS,
				RealServers: []*RealServer{
					{Name: "10.0.2.1:80", Address: "10.0.2.1:80", Weight: 1, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 103},
				},
				RateLimit: defaultRateLimit,
				Line:      97,
			},
			{
				Name:         "rdp",
				Listen:       []string{":3389"},
				Mode:         ModeTCP,
				Scheduler:    "rdp_cookie",
				ForwardedFor: true,
				Retries:      DefaultRetries,
				QueueTimeout: DefaultQueueTimeout,
				Timeouts:     defaultTimeouts,
				HealthCheck:  defaultHealthCheck,
				Persistence: Persistence{
					Method:       PersistRDPCookie,
					Timeout:      8 * time.Hour,
					SourceMask:   DefaultSourceMask,
					SourceMask6:  DefaultSourceMask6,
					MaxEntries:   DefaultMaxEntries,
					InspectDelay: 2 * time.Second,
				},
				TLS: defaultTLS,
				RealServers: []*RealServer{
					{Name: "10.0.3.1:3389", Address: "10.0.3.1:3389", Weight: 1, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 111},
				},
				RateLimit: defaultRateLimit,
				Line:      105,
			},
			{
				Name:         "site",
				Listen:       []string{"127.0.0.1:8081"},
				Mode:         ModeHTTP,
				Scheduler:    DefaultScheduler,
				ForwardedFor: true,
				Retries:      DefaultRetries,
				QueueTimeout: DefaultQueueTimeout,
				Allow:        []string{"10.0.0.0/8", "2001:db8::1"},
				Deny:         []string{"10.9.0.0/16"},
				AllowNets:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")},
				DenyNets:     []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
				Compress:     true,
				RateLimit:    RateLimit{Requests: 100, Per: time.Minute, Burst: 20},
				Routes: []*Route{
					{
						Name: "api", Host: "api.example.com", PathPrefix: "/v1/", Methods: []string{"GET", "POST"},
						Header: "X-Canary: 1|yes", To: "app", StripPrefix: true, RedirectCode: DefaultRedirectCode,
						HeaderName: "X-Canary", HeaderValue: regexp.MustCompile("^(?:1|yes)$"), Line: 124,
					},
					{
						PathRegex: "^/old[0-9]*/", Redirect: "https://www.example.com/new/", RedirectCode: 301,
						PathRE: regexp.MustCompile("^/old[0-9]*/"), Line: 132,
					},
				},
				RequestHeaders:  HeaderRules{Set: map[string]string{"X-Env": "prod"}, Remove: []string{"X-Debug"}},
				ResponseHeaders: HeaderRules{Set: map[string]string{"Strict-Transport-Security": "max-age=31536000"}, Remove: []string{"Server"}},
				Timeouts:        defaultTimeouts,
				HealthCheck:     defaultHealthCheck,
				Persistence:     defaultPersistence,
				TLS:             defaultTLS,
				RealServers: []*RealServer{
					{Name: "10.0.4.1:80", Address: "10.0.4.1:80", Weight: 1, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 119},
				},
				Line: 113,
			},
			{
				Name:         "app",
				Mode:         ModeHTTP,
				Scheduler:    DefaultScheduler,
				ForwardedFor: true,
				Retries:      DefaultRetries,
				QueueTimeout: DefaultQueueTimeout,
				Fallback:     "10.0.5.9:80",
				RateLimit:    defaultRateLimit,
				Timeouts:     defaultTimeouts,
				HealthCheck:  defaultHealthCheck,
				Persistence:  defaultPersistence,
				TLS:          defaultTLS,
				RealServers: []*RealServer{
					{Name: "10.0.5.1:80", Address: "10.0.5.1:80", Weight: 1, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 146},
				},
				Line: 143,
			},
			{
				Name:         "rdp-dr",
				Listen:       []string{"10.0.0.21:3390"},
				Mode:         ModeDR,
				Protocol:     ProtocolTCP,
				Scheduler:    "wlc",
				ForwardedFor: true,
				Retries:      DefaultRetries,
				QueueTimeout: DefaultQueueTimeout,
				RateLimit:    defaultRateLimit,
				Timeouts:     defaultTimeouts,
				HealthCheck: HealthCheck{
					Type: CheckTCP, Method: DefaultCheckMethod, Path: DefaultCheckPath,
					ExpectStatus: StatusRanges{{200, 399}}, Interval: 5 * time.Second, Timeout: DefaultCheckTimeout,
					Rise: DefaultRise, Fall: DefaultFall,
				},
				Persistence: Persistence{
					Method: PersistSourceIP, Timeout: 2 * time.Hour, SourceMask: 24, SourceMask6: 64,
					MaxEntries: DefaultMaxEntries, InspectDelay: DefaultInspectDelay,
				},
				TLS: defaultTLS,
				RealServers: []*RealServer{
					{Name: "ts1", Address: "10.0.0.41:3390", Weight: 2, TLSVerify: true, Protocol: ProtoHTTP1, State: StateReady, Line: 189},
					{Name: "ts2", Address: "10.0.0.42:3390", Weight: 1, TLSVerify: true, Protocol: ProtoHTTP1, State: StateDrain, Line: 190},
				},
				Line: 180,
			},
		},
		HA: HA{
			Interface:      "eth0",
			VRID:           51,
			Priority:       150,
			AdvertInterval: 100 * time.Millisecond,
			FloatingIPs:    []string{"10.0.0.21/24", "fd00::21/64"},
			Preempt:        false,
			PreemptDelay:   5 * time.Second,
			UnicastPeers:   []string{"10.0.0.12", "fd00::12"},
			TrackPing:      []string{"10.0.0.1", "fd00::1"},
			TrackServices:  []string{"web", "rdp"},
			TrackWeight:    20,
			Notify:         "/usr/local/bin/ha-notify --quiet",
			SyncPeer:       "10.0.0.12:9080",
			SyncUser:       "sync", SyncPasswordFile: "testdata/test-only-sync-password", SyncCA: "testdata/test-only-admin.crt",
			VIPs:       []netip.Prefix{netip.MustParsePrefix("10.0.0.21/24"), netip.MustParsePrefix("fd00::21/64")},
			Peers:      []netip.Addr{netip.MustParseAddr("10.0.0.12"), netip.MustParseAddr("fd00::12")},
			NotifyArgs: []string{"/usr/local/bin/ha-notify", "--quiet"},
			Line:       162,
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%s\nwant\n%s", dump(c), dump(want))
	}
}

// TestGoodFullUsesEveryKey keeps good-full.toml a complete example: a new
// field must appear in it, which also proves the decoder supports its type.
func TestGoodFullUsesEveryKey(t *testing.T) {
	var m map[string]any
	md, err := toml.DecodeFile("testdata/good-full.toml", &m)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, k := range md.Keys() {
		used[k.String()] = true
	}
	for _, key := range keysOf(reflect.TypeFor[Config](), "") {
		if !used[key] {
			t.Errorf("testdata/good-full.toml does not set %s", key)
		}
	}
}

// keysOf lists the key paths of a struct type, without array indexes.
func keysOf(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range t.Fields() {
		key := tomlKey(f)
		if key == "" {
			continue
		}
		key = join(prefix, key)
		keys = append(keys, key)
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Pointer {
			ft = ft.Elem().Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, keysOf(ft, key)...)
		}
	}
	return keys
}

// TestFieldTags makes every exported field choose: a key, or `toml:"-"`.
func TestFieldTags(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(st reflect.Type) {
		if seen[st] {
			return
		}
		seen[st] = true
		for f := range st.Fields() {
			if _, ok := f.Tag.Lookup("toml"); f.IsExported() && !ok {
				t.Errorf("%s.%s has no toml tag", st.Name(), f.Name)
			}
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Pointer {
				ft = ft.Elem().Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(ft)
			}
		}
	}
	walk(reflect.TypeFor[Config]())
}

// TestBadFiles compares what each bad file reports, as `fulcrum check`
// prints it, with testdata/NAME.golden. Run with -update to rewrite them.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad-*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := Load(file)
			if err == nil {
				t.Fatalf("Load succeeded: %s", dump(c))
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", got, golden, want)
			}
		})
	}
}

// TestEveryProblem checks that one bad file yields all of its problems, each
// at its own line, not only the first.
func TestEveryProblem(t *testing.T) {
	_, err := Load("testdata/bad-many.toml")
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v, want Errors", err)
	}
	var got []int
	for _, p := range errs {
		got = append(got, p.Line)
	}
	// Line 6 is the service's header: its name is duplicated by line 24,
	// whose missing real servers are reported at its header.
	want := []int{3, 4, 8, 9, 10, 13, 18, 21, 22, 24, 25, 26, 27}
	if !slices.Equal(got, want) {
		t.Errorf("lines %v, want %v\n%v", got, want, err)
	}
	if !slices.IsSortedFunc(errs, func(a, b Problem) int { return a.Line - b.Line }) {
		t.Errorf("problems not sorted by line:\n%v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/no-such-file.toml")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want fs.ErrNotExist", err)
	}
}

// FuzzParse feeds arbitrary bytes to Parse, which reads operator-written
// files and must report, never panic. It also checks every problem's line
// is in the file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a = [{b = \"\"\"\n\"\"\", c = '''x'''}]\n[[a.b]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err == nil {
			if c == nil {
				t.Fatal("nil Config and nil error")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error %T is not a non-empty Errors: %v", err, err)
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range errs {
			if p.Line < 0 || p.Line > lines {
				t.Errorf("line %d outside the file's %d lines: %v", p.Line, lines, p)
			}
		}
	})
}
