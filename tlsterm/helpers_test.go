package tlsterm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// rsaKey is the one RSA 2048 key of every RSA test certificate: generating
// one takes a while, and which key a certificate has does not matter here.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testCA is a self-signed ECDSA P-256 certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Fulcrum Test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, file, pemOf("CERTIFICATE", der))
	return &testCA{cert: cert, key: key, file: file}
}

// pool is a pool holding the CA alone.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leafSpec describes a certificate to issue.
type leafSpec struct {
	cn        string
	dns       []string
	ips       []net.IP
	rsa       bool      // RSA 2048 rather than ECDSA P-256
	notBefore time.Time // zero: an hour ago
	notAfter  time.Time // zero: in a year
	client    bool      // for TLS clients (extended key usage clientAuth only)
	serial    *big.Int  // nil: random
}

// issue makes a certificate signed by ca.
func (ca *testCA) issue(t *testing.T, s leafSpec) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	var key crypto.Signer = rsaKey()
	if !s.rsa {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	if s.notBefore.IsZero() {
		s.notBefore = time.Now().Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if s.serial == nil {
		s.serial = randomSerial(t)
	}
	usage := x509.ExtKeyUsageServerAuth
	if s.client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: s.serial,
		Subject:      pkix.Name{CommonName: s.cn, Organization: []string{"Fulcrum Test"}},
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
		NotBefore:    s.notBefore,
		NotAfter:     s.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if s.rsa {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// files issues a certificate and writes it, as a PEM chain (leaf, then the
// CA), and its key into a new directory: ECDSA keys as SEC 1 ("EC PRIVATE
// KEY"), RSA keys as PKCS #8 ("PRIVATE KEY").
func (ca *testCA) files(t *testing.T, s leafSpec) *config.Certificate {
	t.Helper()
	cert, key := ca.issue(t, s)
	dir := t.TempDir()
	c := &config.Certificate{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	writeFile(t, c.Cert, pemOf("CERTIFICATE", cert.Raw)+pemOf("CERTIFICATE", ca.cert.Raw))
	writeFile(t, c.Key, keyPEM(t, key))
	return c
}

// tlsCert issues a certificate as a client presents it.
func (ca *testCA) tlsCert(t *testing.T, s leafSpec) tls.Certificate {
	t.Helper()
	cert, key := ca.issue(t, s)
	return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.cert.Raw}, PrivateKey: key, Leaf: cert}
}

func keyPEM(t *testing.T, key crypto.Signer) string {
	t.Helper()
	if k, ok := key.(*ecdsa.PrivateKey); ok {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("EC PRIVATE KEY", der)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("PRIVATE KEY", der)
}

func pemOf(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// served is what the test server saw of one connection.
type served struct {
	state tls.ConnectionState
	err   error // of the server's handshake
}

// serveTLS listens on 127.0.0.1 with tls.Listen and cfg. Each connection
// is handshaken, sent "ok" and held until the client closes it; what the
// server saw goes to the returned channel (the oldest are dropped when
// nobody reads them). It all ends with the test.
func serveTLS(t *testing.T, cfg *tls.Config) (string, <-chan served) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan served, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := make(map[net.Conn]bool)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				err := tc.Handshake()
				select {
				case seen <- served{tc.ConnectionState(), err}:
				default:
				}
				if err != nil {
					return
				}
				tc.Write([]byte("ok"))
				io.Copy(io.Discard, tc)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), seen
}

// dial connects to addr with cfg and reads the server's "ok": in TLS 1.3
// the client's handshake ends before the server has checked the client's
// certificate, so a refusal shows only then.
func dial(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

// leafName names the certificate a client was served by its first name.
func leafName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return describe(cs.PeerCertificates[0])
}

// wantErr checks err against a wanted substring ("" wants no error).
func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("error %q, want none", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q, want it to contain %q", err, want)
	}
}
