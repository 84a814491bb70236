package tlsterm

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// certFiles issues a certificate with ca and writes it, with the CA's, and
// its key, as a configuration names them.
func certFiles(t *testing.T, ca *testpki.CA, l testpki.Leaf) *config.Certificate {
	t.Helper()
	cert, key := ca.Files(t, l)
	return &config.Certificate{Cert: cert, Key: key}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
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
