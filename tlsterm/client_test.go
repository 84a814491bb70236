package tlsterm

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

func TestClientConfig(t *testing.T) {
	ca := testpki.NewCA(t, "Backend CA")
	wrong := testpki.NewCA(t, "Wrong CA")
	store := NewStore()
	_, err := store.Load([]*config.Certificate{certFiles(t, ca, testpki.Leaf{DNS: []string{"backend.internal"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerConfig(&config.TLS{}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, srv)
	_, port, _ := net.SplitHostPort(addr)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	writeFile(t, notPEM, "no certificate here\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")

	tests := []struct {
		name      string
		rs        config.RealServer
		wantName  string
		wantErr   string // from ClientConfig
		wantDial  string // from the handshake
		wantRoots bool
	}{
		{name: "verify, custom CA, tls_server_name", rs: config.RealServer{Address: addr, TLSServerName: "backend.internal", TLSVerify: true, TLSCA: ca.File},
			wantName: "backend.internal", wantRoots: true},
		{name: "verify, custom CA, the address's IP", rs: config.RealServer{Address: addr, TLSVerify: true, TLSCA: ca.File},
			wantName: "127.0.0.1", wantRoots: true},
		{name: "verify, wrong CA", rs: config.RealServer{Address: addr, TLSServerName: "backend.internal", TLSVerify: true, TLSCA: wrong.File},
			wantName: "backend.internal", wantRoots: true, wantDial: "certificate signed by unknown authority"},
		{name: "verify, system roots", rs: config.RealServer{Address: addr, TLSServerName: "backend.internal", TLSVerify: true},
			wantName: "backend.internal", wantDial: "certificate signed by unknown authority"},
		{name: "verify, wrong name", rs: config.RealServer{Address: addr, TLSServerName: "other.internal", TLSVerify: true, TLSCA: ca.File},
			wantName: "other.internal", wantRoots: true, wantDial: "certificate is valid for backend.internal, not other.internal"},
		{name: "no verify", rs: config.RealServer{Address: addr, TLSServerName: "backend.internal"}, wantName: "backend.internal"},
		{name: "no verify, wrong CA", rs: config.RealServer{Address: addr, TLSVerify: false, TLSCA: wrong.File},
			wantName: "127.0.0.1", wantRoots: true},
		{name: "no verify, wrong name", rs: config.RealServer{Address: addr, TLSServerName: "other.internal"}, wantName: "other.internal"},
		{name: "IPv6 address", rs: config.RealServer{Address: "[::1]:" + port}, wantName: "::1", wantDial: "skip"},
		{name: "tls_ca missing", rs: config.RealServer{Address: addr, TLSVerify: true, TLSCA: missing},
			wantErr: "tls_ca: " + missing + ": no such file or directory"},
		{name: "tls_ca not PEM", rs: config.RealServer{Address: addr, TLSVerify: true, TLSCA: notPEM},
			wantErr: "tls_ca: " + notPEM + ": no PEM certificate found"},
		{name: "tls_ca missing, no verify", rs: config.RealServer{Address: addr, TLSCA: missing},
			wantErr: "tls_ca: " + missing + ": no such file or directory"},
		{name: "address without a port", rs: config.RealServer{Address: "127.0.0.1"}, wantErr: "address: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ClientConfig(&tt.rs, []string{"http/1.1"})
			wantErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if cfg.ServerName != tt.wantName || cfg.InsecureSkipVerify != !tt.rs.TLSVerify || (cfg.RootCAs != nil) != tt.wantRoots ||
				cfg.MinVersion != tls.VersionTLS12 || !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) || cfg.ClientSessionCache == nil {
				t.Errorf("ServerName %q InsecureSkipVerify %v RootCAs %v MinVersion %x NextProtos %q session cache %v",
					cfg.ServerName, cfg.InsecureSkipVerify, cfg.RootCAs != nil, cfg.MinVersion, cfg.NextProtos, cfg.ClientSessionCache != nil)
			}
			if tt.wantDial == "skip" {
				return
			}
			cs, err := dial(t, addr, cfg)
			wantErr(t, err, tt.wantDial)
			if err == nil && cs.NegotiatedProtocol != "http/1.1" {
				t.Errorf("ALPN %q, want http/1.1", cs.NegotiatedProtocol)
			}
		})
	}
}

// TestClientResumes checks that new connections to a real server resume
// the session of an earlier one.
func TestClientResumes(t *testing.T) {
	ca := testpki.NewCA(t, "Backend CA")
	store := NewStore()
	if _, err := store.Load([]*config.Certificate{certFiles(t, ca, testpki.Leaf{DNS: []string{"backend.internal"}})}); err != nil {
		t.Fatal(err)
	}
	srv, err := ServerConfig(&config.TLS{}, store, NewRotator(0))
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, srv)
	cfg, err := ClientConfig(&config.RealServer{Address: addr, TLSServerName: "backend.internal", TLSVerify: true, TLSCA: ca.File}, []string{"http/1.1"})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true, true} {
		cs, err := dial(t, addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if cs.DidResume != want {
			t.Errorf("connection %d: resumed %v, want %v", i, cs.DidResume, want)
		}
	}
}
