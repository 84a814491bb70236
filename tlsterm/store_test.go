package tlsterm

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// fakeConn is a connection accepted on a given local address.
type fakeConn struct {
	net.Conn
	local net.Addr
}

func (c fakeConn) LocalAddr() net.Addr { return c.local }

func TestGetCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	store := NewStore()
	_, err := store.Load([]*config.Certificate{
		certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com", "example.com"}}), // the default
		certFiles(t, ca, testpki.Leaf{DNS: []string{"*.example.com", "*.wild.test"}, RSA: true}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"api.example.com"}}),
		certFiles(t, ca, testpki.Leaf{CN: "legacy.example.org"}), // no SANs: the CN counts
		certFiles(t, ca, testpki.Leaf{CN: "ignored.example.org", DNS: []string{"san.example.org"}}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"ip.example.net"}, IPs: []net.IP{net.ParseIP("192.0.2.10"), net.ParseIP("2001:db8::10")}}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"Mixed.Example.NET."}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	at := func(ip string) net.Conn {
		return fakeConn{local: &net.TCPAddr{IP: net.ParseIP(ip), Port: 443}}
	}
	tests := []struct {
		name string
		sni  string
		conn net.Conn
		want string // the first name of the certificate picked
	}{
		{name: "exact", sni: "www.example.com", want: "www.example.com"},
		{name: "exact second name", sni: "example.com", want: "www.example.com"},
		{name: "case-insensitive", sni: "WWW.Example.COM", want: "www.example.com"},
		{name: "trailing dot", sni: "www.example.com.", want: "www.example.com"},
		{name: "exact beats wildcard", sni: "api.example.com", want: "api.example.com"},
		{name: "wildcard", sni: "shop.example.com", want: "*.example.com"},
		{name: "wildcard case-insensitive", sni: "SHOP.Example.com", want: "*.example.com"},
		{name: "second wildcard", sni: "x.wild.test", want: "*.example.com"},
		{name: "wildcard is one label only", sni: "a.b.wild.test", want: "www.example.com"},
		{name: "wildcard needs a label", sni: "wild.test", want: "www.example.com"},
		{name: "wildcard needs a non-empty label", sni: ".wild.test", want: "www.example.com"},
		{name: "CN without SANs", sni: "legacy.example.org", want: "legacy.example.org"},
		{name: "CN ignored with SANs", sni: "ignored.example.org", want: "www.example.com"},
		{name: "SAN of a cert with a CN", sni: "san.example.org", want: "san.example.org"},
		{name: "upper-case SAN in the certificate", sni: "mixed.example.net", want: "mixed.example.net"},
		{name: "unknown name: default", sni: "other.org", want: "www.example.com"},
		{name: "no SNI: default", want: "www.example.com"},
		{name: "no SNI, other local IP: default", conn: at("192.0.2.99"), want: "www.example.com"},
		{name: "no SNI, local IP in a SAN", conn: at("192.0.2.10"), want: "ip.example.net"},
		{name: "no SNI, IPv4-mapped local IP", conn: at("::ffff:192.0.2.10"), want: "ip.example.net"},
		{name: "no SNI, local IPv6 in a SAN", conn: at("2001:db8::10"), want: "ip.example.net"},
		{name: "IP literal SNI", sni: "192.0.2.10", want: "ip.example.net"},
		{name: "unknown SNI wins over local IP", sni: "other.org", conn: at("192.0.2.10"), want: "www.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := store.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni, Conn: tt.conn})
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(c.Leaf); got != tt.want {
				t.Errorf("picked %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGetCertificateEmpty(t *testing.T) {
	_, err := NewStore().GetCertificate(&tls.ClientHelloInfo{ServerName: "www.example.com"})
	wantErr(t, err, "no certificates loaded")
	if info := NewStore().Info(); info != nil {
		t.Errorf("Info() = %v, want nil", info)
	}
}

// TestHandshakeSNI checks, through real handshakes, the certificate a client
// sees: by ServerName, and between an ECDSA and an RSA certificate of one
// name by what the client supports.
func TestHandshakeSNI(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	store := NewStore()
	_, err := store.Load([]*config.Certificate{
		certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com", "example.com"}}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"*.example.com"}, RSA: true}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"dual.example.com"}}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"dual.example.com"}, RSA: true}),
		certFiles(t, ca, testpki.Leaf{DNS: []string{"ip.example.com"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerConfig(&config.TLS{}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, cfg)
	rsaOnly := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}
	tests := []struct {
		name       string
		serverName string
		max        uint16   // client's MaxVersion; zero: Go's default
		suites     []uint16 // client's TLS 1.2 suites; nil: Go's default
		wantDNS    []string
		wantAlg    x509.PublicKeyAlgorithm
	}{
		{name: "exact", serverName: "www.example.com", wantDNS: []string{"www.example.com", "example.com"}, wantAlg: x509.ECDSA},
		{name: "exact other case", serverName: "EXAMPLE.com", wantDNS: []string{"www.example.com", "example.com"}, wantAlg: x509.ECDSA},
		{name: "wildcard", serverName: "shop.example.com", wantDNS: []string{"*.example.com"}, wantAlg: x509.RSA},
		{name: "first of two fitting", serverName: "dual.example.com", wantDNS: []string{"dual.example.com"}, wantAlg: x509.ECDSA},
		{name: "the one the client supports", serverName: "dual.example.com", max: tls.VersionTLS12, suites: rsaOnly,
			wantDNS: []string{"dual.example.com"}, wantAlg: x509.RSA},
		{name: "no SNI to an IP in a SAN", wantDNS: []string{"ip.example.com"}, wantAlg: x509.ECDSA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.serverName
			if name == "" {
				name = "127.0.0.1" // Go sends no SNI for an IP, and verifies the IP
			}
			cs, err := dial(t, addr, &tls.Config{ServerName: name, RootCAs: ca.Pool(), MaxVersion: tt.max, CipherSuites: tt.suites})
			if err != nil {
				t.Fatal(err)
			}
			leaf := cs.PeerCertificates[0]
			if fmt.Sprint(leaf.DNSNames) != fmt.Sprint(tt.wantDNS) || leaf.PublicKeyAlgorithm != tt.wantAlg {
				t.Errorf("served %v %v, want %v %v", leaf.PublicKeyAlgorithm, leaf.DNSNames, tt.wantAlg, tt.wantDNS)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	other := testpki.NewCA(t, "Other CA")
	good := certFiles(t, ca, testpki.Leaf{DNS: []string{"good.example.com"}})
	next := certFiles(t, ca, testpki.Leaf{DNS: []string{"next.example.com"}})
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	writeFile(t, notPEM, "hello, I am not a certificate\n")
	badDER := filepath.Join(dir, "bad-der.pem")
	writeFile(t, badDER, string(testpki.PEM("CERTIFICATE", []byte("garbage"))))
	ecdsaLeaf := certFiles(t, ca, testpki.Leaf{DNS: []string{"a.example.com"}})
	ecdsaLeaf2 := certFiles(t, other, testpki.Leaf{DNS: []string{"a.example.com"}})
	rsaLeaf := certFiles(t, ca, testpki.Leaf{DNS: []string{"a.example.com"}, RSA: true})
	expired := certFiles(t, ca, testpki.Leaf{DNS: []string{"expired.example.com"},
		NotBefore: time.Now().Add(-30 * day), NotAfter: time.Now().Add(-3*day - time.Hour)})
	future := certFiles(t, ca, testpki.Leaf{DNS: []string{"future.example.com"},
		NotBefore: time.Now().Add(2*day + time.Hour), NotAfter: time.Now().Add(30 * day)})
	date := func(c *config.Certificate) string {
		data, _ := os.ReadFile(c.Cert)
		leaf, err := x509.ParseCertificate(firstBlock(data, func(typ string) bool { return typ == "CERTIFICATE" }))
		if err != nil {
			t.Fatal(err)
		}
		return leaf.NotAfter.UTC().Format(time.DateOnly)
	}

	store := NewStore()
	if _, err := store.Load([]*config.Certificate{good}); err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerConfig(&config.TLS{}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, cfg)
	serving := func(t *testing.T, want string) {
		t.Helper()
		cs, err := dial(t, addr, &tls.Config{ServerName: want, RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		if got := leafName(cs); got != want {
			t.Fatalf("serving %q, want %q", got, want)
		}
	}

	tests := []struct {
		name  string
		certs []*config.Certificate // each test also loads next first: it must not apply either
		want  []string              // in the error
		is    error
	}{
		{name: "missing certificate file", certs: []*config.Certificate{{Cert: missing, Key: good.Key}},
			want: []string{missing + ": no such file or directory"}, is: fs.ErrNotExist},
		{name: "missing key file", certs: []*config.Certificate{{Cert: good.Cert, Key: missing}},
			want: []string{missing + ": no such file or directory"}, is: fs.ErrNotExist},
		{name: "certificate file not PEM", certs: []*config.Certificate{{Cert: notPEM, Key: good.Key}},
			want: []string{notPEM + ": no PEM certificate found"}},
		{name: "key file not PEM", certs: []*config.Certificate{{Cert: good.Cert, Key: notPEM}},
			want: []string{notPEM + ": no PEM private key found"}},
		{name: "key file holds a certificate", certs: []*config.Certificate{{Cert: good.Cert, Key: good.Cert}},
			want: []string{good.Cert + ": no PEM private key found"}},
		{name: "certificate unparsable", certs: []*config.Certificate{{Cert: badDER, Key: good.Key}},
			want: []string{badDER + ": first certificate: x509: "}},
		{name: "certificate is a directory", certs: []*config.Certificate{{Cert: dir, Key: good.Key}},
			want: []string{dir + ": not a regular file"}},
		{name: "ECDSA key of another certificate", certs: []*config.Certificate{{Cert: ecdsaLeaf.Cert, Key: ecdsaLeaf2.Key}},
			want: []string{ecdsaLeaf.Cert + ": the private key in " + ecdsaLeaf2.Key + " does not match the certificate"}},
		{name: "RSA key for an ECDSA certificate", certs: []*config.Certificate{{Cert: ecdsaLeaf.Cert, Key: rsaLeaf.Key}},
			want: []string{ecdsaLeaf.Cert + ": the private key in " + rsaLeaf.Key + " does not match the certificate"}},
		{name: "ECDSA key for an RSA certificate", certs: []*config.Certificate{{Cert: rsaLeaf.Cert, Key: ecdsaLeaf.Key}},
			want: []string{rsaLeaf.Cert + ": the private key in " + ecdsaLeaf.Key + " does not match the certificate"}},
		{name: "expired", certs: []*config.Certificate{expired},
			want: []string{expired.Cert + ": certificate for expired.example.com expired on " + date(expired) + " (3 days ago)"}},
		{name: "not yet valid", certs: []*config.Certificate{future},
			want: []string{future.Cert + ": certificate for future.example.com is not valid before ", "(in 2 days)"}},
		{name: "every problem reported", certs: []*config.Certificate{expired, {Cert: missing, Key: good.Key}, future},
			want: []string{expired.Cert + ": ", "\n" + missing + ": ", "\n" + future.Cert + ": "}, is: fs.ErrNotExist},
		{name: "no certificates", want: []string{"no certificates given"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serving(t, "good.example.com")
			certs := tt.certs
			if len(certs) > 0 {
				certs = append([]*config.Certificate{next}, certs...)
			}
			warnings, err := store.Load(certs)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			if warnings != nil {
				t.Errorf("warnings %q with an error", warnings)
			}
			serving(t, "good.example.com")
		})
	}

	// A good set still applies, to new handshakes.
	if _, err := store.Load([]*config.Certificate{next}); err != nil {
		t.Fatal(err)
	}
	serving(t, "next.example.com")
}

func TestLoadWarnings(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	tests := []struct {
		name string
		spec testpki.Leaf
		want string // "" wants no warning; {file} is the file, {date} the expiry date
	}{
		{name: "6 days left", spec: testpki.Leaf{DNS: []string{"www.example.com"}, NotAfter: time.Now().Add(6*day + time.Hour)},
			want: "{file}: certificate for www.example.com expires in 6 days ({date})"},
		{name: "13 days left", spec: testpki.Leaf{DNS: []string{"www.example.com"}, NotAfter: time.Now().Add(13*day + time.Hour)},
			want: "{file}: certificate for www.example.com expires in 13 days ({date})"},
		{name: "1 day left", spec: testpki.Leaf{DNS: []string{"www.example.com"}, NotAfter: time.Now().Add(day + time.Hour)},
			want: "{file}: certificate for www.example.com expires in 1 day ({date})"},
		{name: "hours left", spec: testpki.Leaf{DNS: []string{"www.example.com"}, NotAfter: time.Now().Add(5 * time.Hour)},
			want: "{file}: certificate for www.example.com expires in less than a day ({date})"},
		{name: "CN-only name", spec: testpki.Leaf{CN: "legacy.example.org", NotAfter: time.Now().Add(6*day + time.Hour)},
			want: "{file}: certificate for legacy.example.org expires in 6 days ({date})"},
		{name: "15 days left", spec: testpki.Leaf{DNS: []string{"www.example.com"}, NotAfter: time.Now().Add(15 * day)}},
		{name: "a year left", spec: testpki.Leaf{DNS: []string{"www.example.com"}}},
		{name: "client certificate", spec: testpki.Leaf{DNS: []string{"www.example.com"}, Client: true},
			want: "{file}: certificate for www.example.com is not for TLS servers: its extended key usage lacks serverAuth, so clients will refuse it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := certFiles(t, ca, tt.spec)
			warnings, err := NewStore().Load([]*config.Certificate{c})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			if tt.want != "" {
				want = []string{strings.NewReplacer("{file}", c.Cert, "{date}", tt.spec.NotAfter.UTC().Format(time.DateOnly)).Replace(tt.want)}
			}
			if fmt.Sprintf("%q", warnings) != fmt.Sprintf("%q", want) {
				t.Errorf("warnings\n%q\nwant\n%q", warnings, want)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	soon := certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com", "*.example.com"}, IPs: []net.IP{net.ParseIP("192.0.2.1")},
		NotBefore: now.Add(-30 * day), NotAfter: now.Add(6*day + time.Hour)})
	later := certFiles(t, ca, testpki.Leaf{CN: "legacy.example.org", NotBefore: now.Add(-30 * day), NotAfter: now.Add(90 * day)})
	store := NewStore()
	store.now = func() time.Time { return now }
	if _, err := store.Load([]*config.Certificate{soon, later}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		at   time.Time
		want []CertInfo
	}{
		{name: "at load", at: now, want: []CertInfo{
			{File: soon.Cert, Names: []string{"www.example.com", "*.example.com", "192.0.2.1"}, NotAfter: now.Add(6*day + time.Hour), DaysLeft: 6, Expiring: true},
			{File: later.Cert, Names: []string{"legacy.example.org"}, NotAfter: now.Add(90 * day), DaysLeft: 90},
		}},
		{name: "a week on", at: now.Add(7 * day), want: []CertInfo{
			{File: soon.Cert, Names: []string{"www.example.com", "*.example.com", "192.0.2.1"}, NotAfter: now.Add(6*day + time.Hour), DaysLeft: -1, Expiring: true},
			{File: later.Cert, Names: []string{"legacy.example.org"}, NotAfter: now.Add(90 * day), DaysLeft: 83},
		}},
		{name: "77 days on", at: now.Add(77 * day), want: []CertInfo{
			{File: soon.Cert, Names: []string{"www.example.com", "*.example.com", "192.0.2.1"}, NotAfter: now.Add(6*day + time.Hour), DaysLeft: -71, Expiring: true},
			{File: later.Cert, Names: []string{"legacy.example.org"}, NotAfter: now.Add(90 * day), DaysLeft: 13, Expiring: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store.now = func() time.Time { return tt.at }
			got := store.Info()
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Errorf("Info()\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestReloadUnderHandshakes swaps the certificate set back and forth while
// clients keep handshaking: every handshake completes with one of the two.
func TestReloadUnderHandshakes(t *testing.T) {
	ca := testpki.NewCA(t, "Test CA")
	a := certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com"}})
	b := certFiles(t, ca, testpki.Leaf{DNS: []string{"www.example.com"}, RSA: true})
	store := NewStore()
	if _, err := store.Load([]*config.Certificate{a}); err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerConfig(&config.TLS{}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, cfg)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			set := []*config.Certificate{a}
			if i%2 == 1 {
				set = []*config.Certificate{b}
			}
			if _, err := store.Load(set); err != nil {
				t.Error(err)
				return
			}
		}
	})
	seen := make(map[x509.PublicKeyAlgorithm]int)
	var mu sync.Mutex
	var clients sync.WaitGroup
	for range 4 {
		clients.Go(func() {
			for range 25 {
				cs, err := dial(t, addr, &tls.Config{ServerName: "www.example.com", RootCAs: ca.Pool()})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[cs.PeerCertificates[0].PublicKeyAlgorithm]++
				mu.Unlock()
			}
		})
	}
	clients.Wait()
	close(done)
	wg.Wait()
	if seen[x509.ECDSA]+seen[x509.RSA] != 100 {
		t.Errorf("served %v, want 100 handshakes", seen)
	}
}
