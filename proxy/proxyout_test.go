package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/config"
)

func tcp(s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestProxyHeader(t *testing.T) {
	tests := []struct {
		name    string
		version byte
		cl      *clientID
		want    string // v1 text, or the v2 header's addresses as read back
	}{
		{"v1 IPv4", 1, &clientID{src: tcp("192.0.2.7:40000"), dst: tcp("198.51.100.1:443")},
			"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"},
		{"v1 IPv6", 1, &clientID{src: tcp("[2001:db8::7]:40000"), dst: tcp("[2001:db8::1]:80")},
			"PROXY TCP6 2001:db8::7 2001:db8::1 40000 80\r\n"},
		{"v1 IPv4-mapped client of a dual-stack listener", 1,
			&clientID{src: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, dst: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 2}},
			"PROXY TCP4 192.0.2.7 192.0.2.1 1 2\r\n"},
		{"v1 unknown addresses", 1, &clientID{}, "PROXY UNKNOWN\r\n"},
		{"v2 IPv4", 2, &clientID{src: tcp("192.0.2.7:40000"), dst: tcp("198.51.100.1:443")}, "PROXY TCP4 192.0.2.7:40000 198.51.100.1:443"},
		{"v2 IPv6", 2, &clientID{src: tcp("[2001:db8::7]:40000"), dst: tcp("[2001:db8::1]:80")}, "PROXY TCP6 [2001:db8::7]:40000 [2001:db8::1]:80"},
		{"v2 unknown addresses", 2, &clientID{}, "LOCAL UNSPEC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proxyHeader(tt.version, tt.cl)
			if err != nil {
				t.Fatal(err)
			}
			if tt.version == 1 {
				if string(b) != tt.want {
					t.Fatalf("got %q, want %q", b, tt.want)
				}
			}
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("go-proxyproto cannot read %q: %v", b, err)
			}
			if tt.version == 2 {
				if got := describeHeader(h); got != tt.want {
					t.Fatalf("got %s, want %s", got, tt.want)
				}
				if tlvs, _ := h.TLVs(); len(tlvs) != 0 {
					t.Fatalf("TLVs without TLS: %v", tlvs)
				}
			}
		})
	}
}

func describeHeader(h *proxyproto.Header) string {
	cmd := "LOCAL"
	if h.Command.IsProxy() {
		cmd = "PROXY"
	}
	s := cmd + " " + map[proxyproto.AddressFamilyAndProtocol]string{
		proxyproto.TCPv4: "TCP4", proxyproto.TCPv6: "TCP6", proxyproto.UNSPEC: "UNSPEC"}[h.TransportProtocol]
	if h.Command.IsProxy() {
		s += " " + h.SourceAddr.String() + " " + h.DestinationAddr.String()
	}
	return s
}

func TestProxyHeaderTLVs(t *testing.T) {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "alice"}}
	tests := []struct {
		name       string
		cs         tls.ConnectionState
		wantClient uint8
		wantVerify bool
		wantCN     string
	}{
		{"no client certificate", tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256,
			NegotiatedProtocol: "h2", ServerName: "www.example.com"}, 0x01, false, ""},
		{"verified client certificate", tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256,
			NegotiatedProtocol: "h2", ServerName: "www.example.com",
			PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}, 0x07, true, "alice"},
		{"unverified client certificate, resumed", tls.ConnectionState{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			PeerCertificates: []*x509.Certificate{cert}, DidResume: true}, 0x05, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := &clientID{src: tcp("192.0.2.7:40000"), dst: tcp("198.51.100.1:443"), tls: &tt.cs}
			b, err := proxyHeader(2, cl)
			if err != nil {
				t.Fatal(err)
			}
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatal(err)
			}
			tlvs, err := h.TLVs()
			if err != nil {
				t.Fatal(err)
			}
			got := map[proxyproto.PP2Type]string{}
			for _, tlv := range tlvs {
				got[tlv.Type] = string(tlv.Value)
			}
			if got[proxyproto.PP2_TYPE_ALPN] != tt.cs.NegotiatedProtocol || got[proxyproto.PP2_TYPE_AUTHORITY] != tt.cs.ServerName {
				t.Errorf("ALPN %q authority %q, want %q %q", got[proxyproto.PP2_TYPE_ALPN], got[proxyproto.PP2_TYPE_AUTHORITY],
					tt.cs.NegotiatedProtocol, tt.cs.ServerName)
			}
			ssl, ok := tlvparse.FindSSL(tlvs)
			if !ok {
				t.Fatal("no PP2_TYPE_SSL")
			}
			if ssl.Client != tt.wantClient || ssl.Verified() != tt.wantVerify {
				t.Errorf("client %#x verified %v, want %#x %v", ssl.Client, ssl.Verified(), tt.wantClient, tt.wantVerify)
			}
			if v, _ := ssl.SSLVersion(); v != tlsVersionName(tt.cs.Version) {
				t.Errorf("version %q", v)
			}
			if c, _ := ssl.SSLCipher(); c != tls.CipherSuiteName(tt.cs.CipherSuite) {
				t.Errorf("cipher %q", c)
			}
			if cn, _ := ssl.ClientCN(); cn != tt.wantCN {
				t.Errorf("CN %q, want %q", cn, tt.wantCN)
			}
		})
	}
}

// proxyBackend is a real server that expects a PROXY header first on every
// connection, then answers HTTP/1.1 requests with "conn N from SRC", N the
// connection's number and SRC the header's source.
type proxyBackend struct {
	addr    string
	conns   atomic.Int32
	mu      sync.Mutex
	headers []*proxyproto.Header
}

func startProxyBackend(t testing.TB) *proxyBackend {
	b := &proxyBackend{}
	b.addr = listenTCP(t, func(c net.Conn) {
		n := b.conns.Add(1)
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		b.mu.Lock()
		b.headers = append(b.headers, h)
		b.mu.Unlock()
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			body := fmt.Sprintf("conn %d from %v", n, h.SourceAddr)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	return b
}

// TestPrivateConnections: a connection to a send_proxy real server carries
// one client's header, so each client gets its own, kept for its next
// requests, and the pool is never used for it.
func TestPrivateConnections(t *testing.T) {
	for _, version := range []string{config.SendProxyV1, config.SendProxyV2} {
		t.Run(version, func(t *testing.T) {
			b := startProxyBackend(t)
			p := startProxy(t, testConfig(testService("web", "127.0.0.1:0",
				&config.RealServer{Name: "a", Address: b.addr, Weight: 1, SendProxy: version})))
			addr := p.Services()[0].Addrs()[0].String()
			c1, c2 := dialClient(t, addr), dialClient(t, addr)
			seen := map[string]string{}
			for i := range 3 {
				for name, c := range map[string]*client{"c1": c1, "c2": c2} {
					status, body := c.get()
					if status != 200 {
						t.Fatalf("%s request %d: status %d %s", name, i, status, body)
					}
					want := "from " + c.c.LocalAddr().String()
					if !strings.HasSuffix(body, want) {
						t.Fatalf("%s: real server saw %q, want %q", name, body, want)
					}
					if prev, ok := seen[name]; ok && prev != body {
						t.Fatalf("%s changed connections: %q then %q", name, prev, body)
					}
					seen[name] = body
				}
			}
			if seen["c1"] == seen["c2"] {
				t.Fatalf("two clients shared a private connection: %q", seen["c1"])
			}
			if n := b.conns.Load(); n != 2 {
				t.Fatalf("%d connections to the real server, want 2", n)
			}
			rs := p.Services()[0].reals.Load().list[0]
			rs.mu.Lock()
			pooled := rs.nidle
			rs.mu.Unlock()
			if pooled != 0 {
				t.Fatalf("%d private connections went to the shared pool", pooled)
			}
		})
	}
}

// TestPrivateConnectionsH2: an HTTP/2 client's requests go over a transport
// private to its connection, whose connection starts with a v2 header
// carrying the TLS details.
func TestPrivateConnectionsH2(t *testing.T) {
	b := startProxyBackend(t)
	e := startH2(t, func(vs *config.VirtualService) { vs.RealServers[0].SendProxy = config.SendProxyV2 }, b.addr)
	bodies := map[string]bool{}
	for range 2 {
		cl := e.client()
		var first string
		for i := range 3 {
			resp, err := cl.Get(e.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if i == 0 {
				first = string(body)
			} else if string(body) != first {
				t.Fatalf("one client, two connections: %q, %q", first, body)
			}
		}
		bodies[first] = true
	}
	if len(bodies) != 2 || b.conns.Load() != 2 {
		t.Fatalf("bodies %v, %d connections: want one connection per client", bodies, b.conns.Load())
	}
	b.mu.Lock()
	h := b.headers[0]
	b.mu.Unlock()
	tlvs, _ := h.TLVs()
	var alpn string
	for _, tlv := range tlvs {
		if tlv.Type == proxyproto.PP2_TYPE_ALPN {
			alpn = string(tlv.Value)
		}
	}
	if ssl, ok := tlvparse.FindSSL(tlvs); !ok || !ssl.ClientSSL() || alpn != "h2" {
		t.Fatalf("TLVs %v: want PP2_TYPE_SSL and ALPN h2", tlvs)
	}
}

// TestProxyHeaderWithFirstRequest: on a new connection to a send_proxy real
// server the PROXY header and the first request head go out in one write,
// so the real server receives them in one data segment; the next request on
// the connection comes without a header.
func TestProxyHeaderWithFirstRequest(t *testing.T) {
	for _, version := range []string{config.SendProxyV1, config.SendProxyV2} {
		t.Run(version, func(t *testing.T) {
			addr := listenTCP(t, func(c net.Conn) {
				var got []byte
				buf := make([]byte, 4096)
				for n := 0; ; n++ {
					// (A v2 header's signature holds a blank line too.)
					for i := bytes.Index(got, []byte("GET ")); i < 0 || !bytes.Contains(got[i:], []byte("\r\n\r\n")); i = bytes.Index(got, []byte("GET ")) {
						k, err := c.Read(buf)
						if err != nil {
							return
						}
						got = append(got, buf[:k]...)
					}
					segs := uint32(0)
					if raw, err := c.(*net.TCPConn).SyscallConn(); err == nil {
						raw.Control(func(fd uintptr) {
							if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
								segs = ti.Data_segs_in
							}
						})
					}
					header := bytes.HasPrefix(got, []byte("PROXY ")) || bytes.HasPrefix(got, []byte("\r\n\r\n\x00\r\nQUIT\n"))
					body := fmt.Sprintf("request %d: header %v, %d data segments", n, header, segs)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					got = got[:0]
				}
			})
			p := startProxy(t, testConfig(testService("web", "127.0.0.1:0",
				&config.RealServer{Name: "a", Address: addr, Weight: 1, SendProxy: version})))
			c := dialClient(t, p.Services()[0].Addrs()[0].String())
			for i, want := range []string{"request 0: header true, 1 data segments", "request 1: header false, 2 data segments"} {
				if status, body := c.get(); status != 200 || body != want {
					t.Fatalf("request %d: %d %q, want 200 %q", i, status, body, want)
				}
			}
		})
	}
}
