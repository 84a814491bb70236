// Package testpki makes certificate authorities, certificates and keys for
// tests. It is for _test.go files only: production code must not import it.
//
// Keys are ECDSA P-256, or RSA 2048 where a Leaf asks for it. In PEM, ECDSA
// keys are SEC 1 ("EC PRIVATE KEY") and RSA keys PKCS #8 ("PRIVATE KEY").
// Files go to the test's temporary directories and end with the test.
package testpki

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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Org is the organization in the subject of a CA made by NewCA, and so, by
// default, of the certificates it issues.
const Org = "Fulcrum Test"

// rsaKey is the one RSA 2048 key of every RSA certificate: generating one
// takes a while, and which key a test certificate has does not matter.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// CA is a self-signed ECDSA P-256 certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	File string // the CA certificate, PEM
}

// NewCA makes a certificate authority with the subject CN=cn, O=Fulcrum
// Test, valid from an hour ago for ten years.
func NewCA(tb testing.TB, cn string) *CA {
	tb.Helper()
	return NewCAFor(tb, pkix.Name{CommonName: cn, Organization: []string{Org}})
}

// NewCAFor is NewCA with the whole subject given.
func NewCAFor(tb testing.TB, subject pkix.Name) *CA {
	tb.Helper()
	key := ecdsaKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(tb),
		Subject:               subject,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	cert := create(tb, tmpl, tmpl, key, key)
	file := filepath.Join(tb.TempDir(), "ca.pem")
	writeFile(tb, file, PEM("CERTIFICATE", cert.Raw))
	return &CA{Cert: cert, Key: key, File: file}
}

// Pool is a pool holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf describes a certificate to issue. The zero value is a server
// certificate with no names and an ECDSA key, valid from an hour ago for a
// year.
type Leaf struct {
	CN        string
	Org       string // of the subject; "": the issuer's (none when self-signed)
	DNS       []string
	IPs       []net.IP
	RSA       bool      // RSA 2048 rather than ECDSA P-256
	NotBefore time.Time // zero: an hour ago
	NotAfter  time.Time // zero: in a year
	Client    bool      // for TLS clients (extended key usage clientAuth only)
	Serial    *big.Int  // nil: random
	NoChain   bool      // Files and TLSCert leave the CA's certificate out
}

// Issue makes a certificate signed by ca.
func (ca *CA) Issue(tb testing.TB, l Leaf) (*x509.Certificate, crypto.Signer) {
	tb.Helper()
	return issue(tb, ca, l)
}

// SelfSigned makes a certificate signed by its own key.
func SelfSigned(tb testing.TB, l Leaf) (*x509.Certificate, crypto.Signer) {
	tb.Helper()
	return issue(tb, nil, l)
}

// Files issues a certificate and writes it, as a PEM chain (the leaf, then
// the CA unless l.NoChain), and its key, as cert.pem and key.pem in a new
// directory.
func (ca *CA) Files(tb testing.TB, l Leaf) (certFile, keyFile string) {
	tb.Helper()
	return files(tb, ca, l)
}

// SelfSignedFiles is Files for a self-signed certificate.
func SelfSignedFiles(tb testing.TB, l Leaf) (certFile, keyFile string) {
	tb.Helper()
	return files(tb, nil, l)
}

// TLSCert issues a certificate as a TLS peer presents it: the leaf, then
// the CA unless l.NoChain.
func (ca *CA) TLSCert(tb testing.TB, l Leaf) tls.Certificate {
	tb.Helper()
	cert, key := ca.Issue(tb, l)
	return tls.Certificate{Certificate: chain(ca, l, cert), PrivateKey: key, Leaf: cert}
}

// KeyPEM encodes key: ECDSA as SEC 1, any other as PKCS #8.
func KeyPEM(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	if k, ok := key.(*ecdsa.PrivateKey); ok {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			tb.Fatal(err)
		}
		return PEM("EC PRIVATE KEY", der)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return PEM("PRIVATE KEY", der)
}

// PEM encodes one block of type typ.
func PEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// issue makes the certificate l describes, signed by ca, or by its own key
// when ca is nil.
func issue(tb testing.TB, ca *CA, l Leaf) (*x509.Certificate, crypto.Signer) {
	tb.Helper()
	var key crypto.Signer = rsaKey()
	if !l.RSA {
		key = ecdsaKey(tb)
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if l.Serial == nil {
		l.Serial = randomSerial(tb)
	}
	subject := pkix.Name{CommonName: l.CN}
	switch {
	case l.Org != "":
		subject.Organization = []string{l.Org}
	case ca != nil:
		subject.Organization = ca.Cert.Subject.Organization
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: l.Serial,
		Subject:      subject,
		DNSNames:     l.DNS,
		IPAddresses:  l.IPs,
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if l.RSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if ca == nil {
		return create(tb, tmpl, tmpl, key, key), key
	}
	return create(tb, tmpl, ca.Cert, key, ca.Key), key
}

// files is Files, self-signed when ca is nil.
func files(tb testing.TB, ca *CA, l Leaf) (certFile, keyFile string) {
	tb.Helper()
	cert, key := issue(tb, ca, l)
	var certPEM []byte
	for _, der := range chain(ca, l, cert) {
		certPEM = append(certPEM, PEM("CERTIFICATE", der)...)
	}
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(tb, certFile, certPEM)
	writeFile(tb, keyFile, KeyPEM(tb, key))
	return certFile, keyFile
}

// chain is the DER chain presented with cert.
func chain(ca *CA, l Leaf, cert *x509.Certificate) [][]byte {
	if ca == nil || l.NoChain {
		return [][]byte{cert.Raw}
	}
	return [][]byte{cert.Raw, ca.Cert.Raw}
}

// create signs tmpl with signer (parent's key) and parses the result.
func create(tb testing.TB, tmpl, parent *x509.Certificate, key, signer crypto.Signer) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

func ecdsaKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func randomSerial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func writeFile(tb testing.TB, name string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}
