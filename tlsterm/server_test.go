package tlsterm

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

func TestServerConfig(t *testing.T) {
	ca := testpki.NewCA(t, "Client CA")
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	writeFile(t, notPEM, "no certificate here\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name     string
		tls      config.TLS
		wantMin  uint16
		wantALPN []string
		wantAuth tls.ClientAuthType
		wantCAs  bool
		wantErr  string
		nilStore bool
	}{
		{name: "defaults", wantMin: tls.VersionTLS12, wantALPN: []string{"http/1.1"}, wantAuth: tls.NoClientCert},
		{name: "1.2", tls: config.TLS{MinVersion: "1.2"}, wantMin: tls.VersionTLS12, wantALPN: []string{"http/1.1"}},
		{name: "1.3", tls: config.TLS{MinVersion: "1.3"}, wantMin: tls.VersionTLS13, wantALPN: []string{"http/1.1"}},
		{name: "ALPN in order", tls: config.TLS{ALPN: []string{"h2", "http/1.1"}}, wantMin: tls.VersionTLS12, wantALPN: []string{"h2", "http/1.1"}},
		{name: "client_auth none ignores client_ca", tls: config.TLS{ClientAuth: "none", ClientCA: missing},
			wantMin: tls.VersionTLS12, wantALPN: []string{"http/1.1"}, wantAuth: tls.NoClientCert},
		{name: "client_auth request", tls: config.TLS{ClientAuth: "request", ClientCA: ca.File},
			wantMin: tls.VersionTLS12, wantALPN: []string{"http/1.1"}, wantAuth: tls.VerifyClientCertIfGiven, wantCAs: true},
		{name: "client_auth require", tls: config.TLS{ClientAuth: "require", ClientCA: ca.File},
			wantMin: tls.VersionTLS12, wantALPN: []string{"http/1.1"}, wantAuth: tls.RequireAndVerifyClientCert, wantCAs: true},
		{name: "min_version 1.1", tls: config.TLS{MinVersion: "1.1"}, wantErr: `min_version: "1.1" is not 1.2 or 1.3`},
		{name: "min_version spelt out", tls: config.TLS{MinVersion: "TLS1.3"}, wantErr: `min_version: "TLS1.3" is not 1.2 or 1.3`},
		{name: "client_auth unknown", tls: config.TLS{ClientAuth: "optional", ClientCA: ca.File},
			wantErr: `client_auth: "optional" is not none, request or require`},
		{name: "require without client_ca", tls: config.TLS{ClientAuth: "require"}, wantErr: `client_auth "require" needs client_ca`},
		{name: "request without client_ca", tls: config.TLS{ClientAuth: "request"}, wantErr: `client_auth "request" needs client_ca`},
		{name: "client_ca missing", tls: config.TLS{ClientAuth: "require", ClientCA: missing},
			wantErr: "client_ca: " + missing + ": no such file or directory"},
		{name: "client_ca not PEM", tls: config.TLS{ClientAuth: "require", ClientCA: notPEM},
			wantErr: "client_ca: " + notPEM + ": no PEM certificate found"},
		{name: "no store", nilStore: true, wantErr: "needs a Store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := NewStore()
			if tt.nilStore {
				store = nil
			}
			cfg, err := ServerConfig(&tt.tls, store, nil)
			wantErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if cfg.MinVersion != tt.wantMin || !slices.Equal(cfg.NextProtos, tt.wantALPN) || cfg.ClientAuth != tt.wantAuth ||
				(cfg.ClientCAs != nil) != tt.wantCAs {
				t.Errorf("MinVersion %x, NextProtos %q, ClientAuth %v, ClientCAs %v; want %x, %q, %v, %v",
					cfg.MinVersion, cfg.NextProtos, cfg.ClientAuth, cfg.ClientCAs != nil, tt.wantMin, tt.wantALPN, tt.wantAuth, tt.wantCAs)
			}
			if cfg.GetCertificate == nil || cfg.Certificates != nil || cfg.CurvePreferences != nil || cfg.SessionTicketsDisabled {
				t.Errorf("GetCertificate set %v, Certificates %v, CurvePreferences %v, SessionTicketsDisabled %v",
					cfg.GetCertificate != nil, cfg.Certificates, cfg.CurvePreferences, cfg.SessionTicketsDisabled)
			}
			if len(tt.tls.ALPN) > 0 && &cfg.NextProtos[0] == &tt.tls.ALPN[0] {
				t.Error("NextProtos shares the configuration's slice")
			}
		})
	}
}

// TestCipherSuites checks that every TLS 1.2 suite served has forward
// secrecy and an AEAD cipher, and that both key types have the HTTP/2 one.
func TestCipherSuites(t *testing.T) {
	cfg, err := ServerConfig(&config.TLS{}, NewStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	names := make(map[uint16]*tls.CipherSuite)
	for _, s := range tls.CipherSuites() {
		names[s.ID] = s
	}
	for _, id := range cfg.CipherSuites {
		s := names[id]
		switch {
		case s == nil:
			t.Errorf("suite %s is not among Go's secure suites", tls.CipherSuiteName(id))
		case !strings.HasPrefix(s.Name, "TLS_ECDHE_"), !strings.Contains(s.Name, "_GCM_") && !strings.Contains(s.Name, "_CHACHA20_POLY1305"):
			t.Errorf("suite %s is not ECDHE with an AEAD cipher", s.Name)
		case !slices.Contains(s.SupportedVersions, tls.VersionTLS12):
			t.Errorf("suite %s is not a TLS 1.2 suite", s.Name)
		}
	}
	for _, want := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256} {
		if !slices.Contains(cfg.CipherSuites, want) {
			t.Errorf("suite %s missing", tls.CipherSuiteName(want))
		}
	}
}

// TestProtocols runs real handshakes against ServerConfig's choices of
// version, cipher suite and ALPN.
func TestProtocols(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	store := NewStore()
	_, err := store.Load([]*config.Certificate{
		certFiles(t, ca, testpki.Leaf{DNS: []string{"ecdsa.example.com"}}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"rsa.example.com"}, RSA: true}),
	})
	if err != nil {
		t.Fatal(err)
	}
	cbc := []uint16{ // what a legacy client may offer alone
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	}
	staticRSA := []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_AES_128_CBC_SHA}
	tests := []struct {
		name       string
		server     config.TLS
		serverName string // "" is ecdsa.example.com
		min, max   uint16 // the client's
		suites     []uint16
		alpn       []string
		curves     []tls.CurveID
		wantErr    string // in the client's error
		wantVer    uint16
		wantSuite  uint16 // 0: any
		wantALPN   string
	}{
		{name: "default client gets 1.3", wantVer: tls.VersionTLS13},
		{name: "1.2 client", max: tls.VersionTLS12, wantVer: tls.VersionTLS12},
		{name: "1.2 client, ECDSA, AES-GCM", max: tls.VersionTLS12, suites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
			wantVer: tls.VersionTLS12, wantSuite: tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
		{name: "1.2 client, ECDSA, ChaCha20", max: tls.VersionTLS12, suites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
			wantVer: tls.VersionTLS12, wantSuite: tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
		{name: "1.2 client, RSA, AES-GCM", serverName: "rsa.example.com", max: tls.VersionTLS12,
			suites:  []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
			wantVer: tls.VersionTLS12, wantSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		{name: "1.2 client, CBC suites only", max: tls.VersionTLS12, suites: cbc, wantErr: "handshake failure"},
		{name: "1.2 client, RSA certificate, CBC suites only", serverName: "rsa.example.com", max: tls.VersionTLS12, suites: cbc,
			wantErr: "handshake failure"},
		{name: "1.2 client, static RSA key exchange only", serverName: "rsa.example.com", max: tls.VersionTLS12, suites: staticRSA,
			wantErr: "handshake failure"},
		{name: "1.1 client", min: tls.VersionTLS10, max: tls.VersionTLS11, wantErr: "protocol version"},
		{name: "min 1.3, 1.3 client", server: config.TLS{MinVersion: "1.3"}, wantVer: tls.VersionTLS13},
		{name: "min 1.3, 1.2 client", server: config.TLS{MinVersion: "1.3"}, max: tls.VersionTLS12, wantErr: "protocol version"},
		{name: "X25519", curves: []tls.CurveID{tls.X25519}, wantVer: tls.VersionTLS13},
		{name: "P-256", curves: []tls.CurveID{tls.CurveP256}, wantVer: tls.VersionTLS13},
		{name: "X25519MLKEM768", curves: []tls.CurveID{tls.X25519MLKEM768}, wantVer: tls.VersionTLS13},
		{name: "ALPN default, client h2 and http/1.1", alpn: []string{"h2", "http/1.1"}, wantVer: tls.VersionTLS13, wantALPN: "http/1.1"},
		{name: "ALPN h2 first", server: config.TLS{ALPN: []string{"h2", "http/1.1"}}, alpn: []string{"http/1.1", "h2"},
			wantVer: tls.VersionTLS13, wantALPN: "h2"},
		{name: "ALPN http/1.1 client to h2 server", server: config.TLS{ALPN: []string{"h2", "http/1.1"}}, alpn: []string{"http/1.1"},
			wantVer: tls.VersionTLS13, wantALPN: "http/1.1"},
		{name: "ALPN over 1.2", server: config.TLS{ALPN: []string{"h2", "http/1.1"}}, max: tls.VersionTLS12, alpn: []string{"h2"},
			wantVer: tls.VersionTLS12, wantALPN: "h2"},
		{name: "no ALPN from the client", server: config.TLS{ALPN: []string{"h2", "http/1.1"}}, wantVer: tls.VersionTLS13},
		{name: "ALPN with no protocol in common", alpn: []string{"h2"}, wantErr: "no application protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ServerConfig(&tt.server, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := serveTLS(t, cfg)
			name := tt.serverName
			if name == "" {
				name = "ecdsa.example.com"
			}
			cs, err := dial(t, addr, &tls.Config{ServerName: name, RootCAs: ca.Pool(), MinVersion: tt.min, MaxVersion: tt.max,
				CipherSuites: tt.suites, NextProtos: tt.alpn, CurvePreferences: tt.curves})
			wantErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if cs.Version != tt.wantVer || (tt.wantSuite != 0 && cs.CipherSuite != tt.wantSuite) || cs.NegotiatedProtocol != tt.wantALPN {
				t.Errorf("got %s %s ALPN %q, want %s %s ALPN %q",
					tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.NegotiatedProtocol,
					tls.VersionName(tt.wantVer), tls.CipherSuiteName(tt.wantSuite), tt.wantALPN)
			}
		})
	}
}

func TestClientAuth(t *testing.T) {
	ca := testpki.NewCA(t, "Client CA")
	other := testpki.NewCA(t, "Other CA")
	serverCA := testpki.NewCA(t, "Server CA")
	store := NewStore()
	if _, err := store.Load([]*config.Certificate{certFiles(t, serverCA, testpki.Leaf{DNS: []string{"www.example.com"}})}); err != nil {
		t.Fatal(err)
	}
	alice := ca.TLSCert(t, testpki.Leaf{CN: "alice", Client: true})
	mallory := other.TLSCert(t, testpki.Leaf{CN: "mallory", Client: true})
	serverOnly := ca.TLSCert(t, testpki.Leaf{CN: "bob"}) // the right CA, but not for clients
	none := tls.Certificate{}
	tests := []struct {
		name       string
		auth       string
		cert       tls.Certificate
		max        uint16
		wantErr    string // in the server's handshake error
		wantVerify string
		wantCN     string
	}{
		{name: "require, no certificate", auth: "require", cert: none, wantErr: "client didn't provide a certificate"},
		{name: "require, no certificate, 1.2", auth: "require", cert: none, max: tls.VersionTLS12, wantErr: "client didn't provide a certificate"},
		{name: "require, certificate from the CA", auth: "require", cert: alice, wantVerify: "SUCCESS", wantCN: "alice"},
		{name: "require, certificate from the CA, 1.2", auth: "require", cert: alice, max: tls.VersionTLS12, wantVerify: "SUCCESS", wantCN: "alice"},
		{name: "require, certificate from another CA", auth: "require", cert: mallory, wantErr: "certificate signed by unknown authority"},
		{name: "require, certificate from another CA, 1.2", auth: "require", cert: mallory, max: tls.VersionTLS12,
			wantErr: "certificate signed by unknown authority"},
		{name: "require, server certificate from the CA", auth: "require", cert: serverOnly, wantErr: "incompatible key usage"},
		{name: "request, no certificate", auth: "request", cert: none, wantVerify: "NONE"},
		{name: "request, certificate from the CA", auth: "request", cert: alice, wantVerify: "SUCCESS", wantCN: "alice"},
		{name: "request, certificate from another CA", auth: "request", cert: mallory, wantErr: "certificate signed by unknown authority"},
		{name: "none, certificate not asked for", auth: "none", cert: alice, wantVerify: "NONE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ServerConfig(&config.TLS{ClientAuth: tt.auth, ClientCA: ca.File}, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			addr, seen := serveTLS(t, cfg)
			client := &tls.Config{ServerName: "www.example.com", RootCAs: serverCA.Pool(), MaxVersion: tt.max}
			if tt.cert.Certificate != nil {
				// Sent even when its issuer is not among the CAs the
				// server names, as a hostile client would.
				client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tt.cert, nil }
			}
			_, clientErr := dial(t, addr, client)
			got := <-seen
			wantErr(t, got.err, tt.wantErr)
			if tt.wantErr != "" {
				if clientErr == nil {
					t.Error("the client saw no error")
				}
				return
			}
			if clientErr != nil {
				t.Fatal(clientErr)
			}
			subject, issuer, _, _, verify := ClientCertFields(&got.state)
			wantSubject, wantIssuer := "", ""
			if tt.wantCN != "" {
				wantSubject, wantIssuer = "CN="+tt.wantCN+",O=Fulcrum Test", "CN=Client CA,O=Fulcrum Test"
			}
			if fmt.Sprint(verify, subject, issuer) != fmt.Sprint(tt.wantVerify, wantSubject, wantIssuer) {
				t.Errorf("verify %q subject %q issuer %q, want %q %q %q", verify, subject, issuer, tt.wantVerify, wantSubject, wantIssuer)
			}
		})
	}
}
