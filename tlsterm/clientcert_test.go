package tlsterm

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"testing"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

func TestClientCertFields(t *testing.T) {
	ca := testpki.NewCA(t, "Client CA")
	cert := func(cn string, serial int64) *x509.Certificate {
		c, _ := ca.Issue(t, testpki.Leaf{CN: cn, Client: true, Serial: big.NewInt(serial)})
		return c
	}
	alice := cert("alice", 0xabc)
	fp := func(c *x509.Certificate) string {
		sum := sha256.Sum256(c.Raw)
		return hex.EncodeToString(sum[:])
	}
	verified := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c, ca.Cert}, VerifiedChains: [][]*x509.Certificate{{c, ca.Cert}}}
	}
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want [5]string // subject, issuer, serial, fingerprint, verify
	}{
		{name: "no state", want: [5]string{4: "NONE"}},
		{name: "no certificate", cs: &tls.ConnectionState{}, want: [5]string{4: "NONE"}},
		{name: "verified", cs: verified(alice),
			want: [5]string{"CN=alice,O=Fulcrum Test", "CN=Client CA,O=Fulcrum Test", "0ABC", fp(alice), "SUCCESS"}},
		{name: "not verified", cs: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{alice}},
			want: [5]string{"CN=alice,O=Fulcrum Test", "CN=Client CA,O=Fulcrum Test", "0ABC", fp(alice), "FAILED"}},
		{name: "RFC 4514 specials escaped", cs: verified(cert(`Doe, "J" <j+d@x>;#`, 1)),
			want: [5]string{`CN=Doe\, \"J\" \<j\+d@x\>\;#,O=Fulcrum Test`, "CN=Client CA,O=Fulcrum Test", "01", "", "SUCCESS"}},
		{name: "control bytes escaped", cs: verified(cert("eve\r\nX-Injected: 1", 0x10)),
			want: [5]string{`CN=eve\0D\0AX-Injected: 1,O=Fulcrum Test`, "CN=Client CA,O=Fulcrum Test", "10", "", "SUCCESS"}},
		{name: "non-ASCII escaped", cs: verified(cert("José\x7f", 0x1234567)),
			want: [5]string{`CN=Jos\C3\A9\7F,O=Fulcrum Test`, "CN=Client CA,O=Fulcrum Test", "01234567", "", "SUCCESS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [5]string
			got[0], got[1], got[2], got[3], got[4] = ClientCertFields(tt.cs)
			if tt.want[3] == "" && tt.cs != nil && len(tt.cs.PeerCertificates) > 0 {
				tt.want[3] = fp(tt.cs.PeerCertificates[0])
			}
			if got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestSerialHex(t *testing.T) {
	tests := []struct {
		n    *big.Int
		want string
	}{
		{nil, ""},
		{big.NewInt(0), "00"},
		{big.NewInt(1), "01"},
		{big.NewInt(0xff), "FF"},
		{big.NewInt(0x100), "0100"},
		{big.NewInt(-0x1a), "-1A"},
		{new(big.Int).Lsh(big.NewInt(1), 127), "80000000000000000000000000000000"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			if got := serialHex(tt.n); got != tt.want {
				t.Errorf("serialHex(%v) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}

func TestDN(t *testing.T) {
	if got, want := dn(pkix.Name{}), ""; got != want {
		t.Errorf("dn(empty) = %q, want %q", got, want)
	}
}
