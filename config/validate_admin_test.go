package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// writeKeyPair writes a fresh self-signed certificate for NAME, valid from
// an hour ago to an hour from now, and its key to dir as NAME.crt and
// NAME.key, and returns their paths.
func writeKeyPair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	now := time.Now()
	return writeCert(t, dir, name, now.Add(-time.Hour), now.Add(time.Hour))
}

// writeCert is writeKeyPair with the certificate's validity period.
func writeCert(t *testing.T, dir, name string, notBefore, notAfter time.Time) (cert, key string) {
	t.Helper()
	certPEM, keyPEM := newKeyPair(t, name, notBefore, notAfter)
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, cert, certPEM)
	writeFile(t, key, keyPEM)
	return cert, key
}

// newKeyPair makes a self-signed ECDSA P-256 certificate for the DNS name
// name, and its key, in PEM.
func newKeyPair(t *testing.T, name string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	cert, key := testpki.SelfSigned(t, testpki.Leaf{CN: name, DNS: []string{name}, NotBefore: notBefore, NotAfter: notAfter})
	return testpki.PEM("CERTIFICATE", cert.Raw), testpki.KeyPEM(t, key)
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAdminTLS checks that the admin certificate and key are loaded when
// the file is validated, so that `fulcrum check` finds a pair the admin
// listener could not use.
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, dir, "admin")
	_, otherKey := writeKeyPair(t, dir, "other")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not PEM\n"))

	tests := []struct {
		name      string
		cert, key string
		want      string // substring of the one problem; "" for valid
	}{
		{"a matching pair", cert, key, ""},
		{"a key that is not the certificate's", cert, otherKey, "lb.toml:5: admin.tls_cert: cannot load the certificate and key: tls: private key does not match public key"},
		{"no certificate in the file", garbage, key, "tls: failed to find any PEM data in certificate input"},
		{"no key in the file", cert, garbage, "tls: failed to find any PEM data in key input"},
		{"a missing file", filepath.Join(dir, "nope.crt"), key, "nope.crt: no such file or directory"},
		{"a directory", dir, key, dir + " is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := fmt.Sprintf(`[admin]
listen = "127.0.0.1:9080"
user = [{ name = "admin", password_hash = "$2a$10$NfeWewPVXxcLNko9c8K9Fu.nT5LoKsTq6V1giBA1lO0tf4FQy.vXK" }]
tls_key = %q
tls_cert = %q
[[virtual_service]]
name = "web"
listen = "127.0.0.1:80"
real_server = [{ address = "10.0.0.1:80" }]
`, tt.key, tt.cert)
			c, err := Parse("lb.toml", []byte(input))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected problems:\n%v", err)
				}
				if c.Admin.TLSCert != tt.cert || c.Admin.TLSKey != tt.key {
					t.Errorf("got cert %q, key %q", c.Admin.TLSCert, c.Admin.TLSKey)
				}
				return
			}
			if err == nil || strings.Count(err.Error(), "\n") > 0 || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want one problem containing %q", err, tt.want)
			}
		})
	}
}
