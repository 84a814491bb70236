package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// TestTCPTLSTermination: a tcp-mode service with [virtual_service.tls]
// terminates TLS and passes the decrypted bytes on: an 8 MiB stream to an
// echo server comes back intact through a half-close (close_notify, then
// EOF), no application protocol is negotiated, openssl s_client talks to
// a line server through it, and curl gets an HTTP answer from a plain
// HTTP real server behind it.
func TestTCPTLSTermination(t *testing.T) {
	ca := testpki.NewCA(t, "tcp-tls")
	cert, key := issue(t, ca, "vip.test", false, "vip.test", "127.0.0.1")
	echo := newTCPBackend(t, "echo", func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	// line answers one line and closes, so that openssl s_client ends.
	line := newTCPBackend(t, "line", func(c *net.TCPConn) {
		l, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			fmt.Fprintf(c, "got %s", l)
		}
	})
	vip, vipLine := freeAddr(t), freeAddr(t)
	svc, svcLine := tcpService(vip, echo), tcpService(vipLine, line)
	svc.name, svcLine.name = "echo", "line"
	svc.opts += tlsTable("", [2]string{cert, key})
	svcLine.opts += tlsTable("", [2]string{cert, key})
	startFulcrum(t, config{services: []service{svc, svcLine}})

	t.Run("stream and half-close", func(t *testing.T) {
		c, err := tls.Dial("tcp", vip, &tls.Config{ServerName: "vip.test", RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "" {
			t.Errorf("ALPN negotiated %q; a tcp service should offer none", p)
		}
		const size = 8 << 20
		werr := make(chan error, 1)
		go func() {
			_, err := io.Copy(c, randomStream(7, size))
			if err == nil {
				err = c.CloseWrite()
			}
			werr <- err
		}()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := &countingHash{h: sha256.New()}
		if _, err := io.Copy(h, c); err != nil {
			t.Fatalf("read echo: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
		if want := sha(t, randomStream(7, size)); h.n != size || h.sum() != want {
			t.Errorf("echo: got %d bytes sha256 %s, want %d bytes sha256 %s", h.n, h.sum(), size, want)
		}
	})

	t.Run("openssl s_client", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl not found: install openssl to run this end-to-end test")
		}
		// -quiet: no session details; -ign_eof: the end of stdin does
		// not end the connection, the real server's close does.
		cmd := exec.Command("openssl", "s_client", "-connect", vipLine, "-servername", "vip.test", "-CAfile", ca.File,
			"-verify_return_error", "-quiet", "-ign_eof")
		cmd.Stdin = strings.NewReader("hello through TLS\n")
		cmd.WaitDelay = 10 * time.Second
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		defer timer.Stop()
		out, err := cmd.Output()
		if string(out) != "got hello through TLS\n" {
			t.Errorf("openssl s_client: got %q (err %v), want the line answered", out, err)
		}
	})

	t.Run("curl over a tcp service", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl not found: install curl to run this end-to-end test")
		}
		web := newHTTPBackend(t, "web1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "plain %s from %s", r.Proto, r.Host)
		}))
		vip2 := freeAddr(t)
		s := service{listen: []string{vip2}, opts: "mode = \"tcp\"\n" + tlsTable("", [2]string{cert, key}), real: []real{web.real("")}}
		startFulcrum(t, config{services: []service{s}})
		_, port, _ := net.SplitHostPort(vip2)
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", ca.File,
			"--resolve", "vip.test:"+port+":127.0.0.1", "https://vip.test:"+port+"/x").CombinedOutput()
		if err != nil || string(out) != "plain HTTP/1.1 from vip.test:"+port {
			t.Errorf("curl: %q (%v), want the real server's plain HTTP answer", out, err)
		}
	})
}

// TestTCPTLSReencryption: a tcp-mode real server with tls = true gets the
// client's bytes over a new TLS connection, verified against tls_ca, with
// no ALPN offered; a wrong CA fails the connect, so the client's
// connection is closed without data.
func TestTCPTLSReencryption(t *testing.T) {
	ca := testpki.NewCA(t, "tcp-backend")
	other := testpki.NewCA(t, "other")
	bcert := ca.TLSCert(t, testpki.Leaf{CN: "backend.internal", DNS: []string{"backend.internal"}, NotAfter: time.Now().Add(time.Hour)})
	offered := make(chan []string, 4)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{bcert},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			offered <- hello.SupportedProtos
			return nil, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					fmt.Fprintf(c, "secure %s", line)
				}
			}()
		}
	}()
	for _, tt := range []struct {
		name, opts string
		want       string
	}{
		{"verified", fmt.Sprintf("tls = true\ntls_server_name = \"backend.internal\"\ntls_ca = %q\n", ca.File), "secure ping\n"},
		{"wrong CA", fmt.Sprintf("tls = true\ntls_server_name = \"backend.internal\"\ntls_ca = %q\n", other.File), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vip := freeAddr(t)
			startFulcrum(t, config{services: []service{{listen: []string{vip}, opts: "mode = \"tcp\"\nretries = 0\n",
				real: []real{{name: "b", address: ln.Addr().String(), opts: tt.opts}}}}})
			c := dialTCP(t, vip)
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(c)
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			select {
			case protos := <-offered:
				if len(protos) != 0 {
					t.Errorf("fulcrum offered ALPN %q to a tcp-mode real server; want none", protos)
				}
			case <-time.After(5 * time.Second):
				t.Error("the real server saw no TLS handshake")
			}
		})
	}
}
