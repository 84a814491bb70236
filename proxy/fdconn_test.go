package proxy

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdPair returns an fdConn over the server side of a loopback TCP
// connection (detached as an event loop detaches it), the loop's
// descriptor, and the client side.
func fdPair(t *testing.T) (*fdConn, int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	local, remote := c.LocalAddr(), c.RemoteAddr()
	fd, err := detachFD(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	fc, err := newFDConn(fd, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	return fc, fd, peer
}

// TestFDConn: the connection a goroutine serves for an event loop behaves
// as the *net.TCPConn it replaces, errors included, and closing it leaves
// the socket open through the loop's descriptor.
func TestFDConn(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, fc *fdConn, fd int, peer net.Conn)
	}{
		{"reads and writes", func(t *testing.T, fc *fdConn, _ int, peer net.Conn) {
			peer.Write([]byte("ping"))
			b := make([]byte, 4)
			if _, err := io.ReadFull(fc, b); err != nil || string(b) != "ping" {
				t.Fatalf("read %q, %v", b, err)
			}
			if _, err := fc.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(peer, b); err != nil || string(b) != "pong" {
				t.Fatalf("peer read %q, %v", b, err)
			}
		}},
		{"addresses kept", func(t *testing.T, fc *fdConn, _ int, peer net.Conn) {
			if fc.RemoteAddr().String() != peer.LocalAddr().String() || fc.LocalAddr().String() != peer.RemoteAddr().String() {
				t.Fatalf("addresses %v %v; peer's %v %v", fc.LocalAddr(), fc.RemoteAddr(), peer.LocalAddr(), peer.RemoteAddr())
			}
		}},
		{"read deadline is a timeout", func(t *testing.T, fc *fdConn, _ int, _ net.Conn) {
			fc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := fc.Read(make([]byte, 1))
			var oe *net.OpError
			if !isTimeout(err) || !errors.As(err, &oe) {
				t.Fatalf("got %v (%T), want a *net.OpError timeout", err, err)
			}
		}},
		{"EOF", func(t *testing.T, fc *fdConn, _ int, peer net.Conn) {
			peer.Close()
			if _, err := fc.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("got %v, want io.EOF", err)
			}
		}},
		{"closed", func(t *testing.T, fc *fdConn, _ int, _ net.Conn) {
			fc.Close()
			if _, err := fc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("got %v, want net.ErrClosed", err)
			}
		}},
		{"close leaves the loop's descriptor open", func(t *testing.T, fc *fdConn, fd int, peer net.Conn) {
			fc.Close()
			peer.Write([]byte("x"))
			peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := peer.Read(make([]byte, 1)); !isTimeout(err) {
				t.Fatalf("peer read: %v, want nothing (the socket is open)", err)
			}
			var b [1]byte
			for range 100 {
				if n, _ := unix.Read(fd, b[:]); n == 1 {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatal("the loop's descriptor does not read the peer's byte")
		}},
		{"half-close", func(t *testing.T, fc *fdConn, _ int, peer net.Conn) {
			if err := fc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("peer read: %v, want io.EOF", err)
			}
			peer.Write([]byte("y")) // the other direction goes on
			b := make([]byte, 1)
			if _, err := io.ReadFull(fc, b); err != nil || b[0] != 'y' {
				t.Fatalf("read %q, %v", b, err)
			}
		}},
		{"idle time readable (tunnels)", func(t *testing.T, fc *fdConn, _ int, _ net.Conn) {
			if _, ok := sinceLastData(fc); !ok {
				t.Fatal("no TCP_INFO through an fdConn: a tunnel's idle timeouts would not apply")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, fd, peer := fdPair(t)
			tt.run(t, fc, fd, peer)
		})
	}
}
