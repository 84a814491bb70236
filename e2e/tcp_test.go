package e2e

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpService is a tcp-mode virtual service over backends.
func tcpService(vip string, backends ...*tcpBackend) service {
	s := service{listen: []string{vip}, opts: "mode = \"tcp\"\n"}
	for _, b := range backends {
		s.real = append(s.real, b.real())
	}
	return s
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	return dialRaw(t, addr).c
}

// TestTCPBothWays streams bytes through a tcp-mode service to an echo
// server and back.
func TestTCPBothWays(t *testing.T) {
	echo := newTCPBackend(t, "echo", func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{tcpService(vip, echo)}})

	const size = 8 << 20
	c := dialTCP(t, vip)
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, randomStream(3, size))
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := &countingHash{h: sha256.New()}
	if _, err := io.Copy(h, c); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if want := sha(t, randomStream(3, size)); h.n != size || h.sum() != want {
		t.Errorf("echo: got %d bytes sha256 %s, want %d bytes sha256 %s", h.n, h.sum(), size, want)
	}
}

// TestTCPHalfClose: the client shuts down its sending side and still gets
// the real server's reply, which the server sends only after seeing EOF
// (RFC 9293 §3.6).
func TestTCPHalfClose(t *testing.T) {
	srv := newTCPBackend(t, "counter", func(c *net.TCPConn) {
		n, err := io.Copy(io.Discard, c) // until the client's FIN
		if err != nil {
			return
		}
		fmt.Fprintf(c, "received %d bytes", n)
	})
	vip := freeAddr(t)
	startFulcrum(t, config{services: []service{tcpService(vip, srv)}})

	c := dialTCP(t, vip)
	if _, err := io.Copy(c, randomStream(4, 100000)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read reply after half-close: %v (got %q)", err, reply)
	}
	if want := "received 100000 bytes"; string(reply) != want {
		t.Errorf("reply %q, want %q", reply, want)
	}
}

// TestTCPBalanced opens connections one after another and checks that
// round robin spreads them over the real servers.
func TestTCPBalanced(t *testing.T) {
	var backends []*tcpBackend
	for i := range 3 {
		name := fmt.Sprintf("tcp%d", i+1)
		backends = append(backends, newTCPBackend(t, name, func(c *net.TCPConn) {
			io.WriteString(c, name) // the server speaks first
		}))
	}
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{tcpService(vip, backends...)}})

	count := map[string]int{}
	for range 9 {
		c := dialTCP(t, vip)
		name, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		count[string(name)]++
		c.Close()
	}
	for _, b := range backends {
		if count[b.name] != 3 || b.conns.Load() != 3 {
			t.Errorf("%s: answered %d and accepted %d of 9 connections, want 3 (all: %v)", b.name, count[b.name], b.conns.Load(), count)
		}
	}
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	logs := f.logsWhere(func(e logEntry) bool { return e.str("logger") == "access" && e.str("msg") == "connection" })
	if len(logs) != 9 {
		t.Errorf("%d access log lines for connections, want 9", len(logs))
	}
}

// TestTCPGracefulStop: a tcp-mode connection open at SIGTERM keeps working
// until the client ends it, and then the process exits 0; new connections
// are refused meanwhile.
func TestTCPGracefulStop(t *testing.T) {
	echo := newTCPBackend(t, "echo", func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{tcpService(vip, echo)}})
	c := dialTCP(t, vip)
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, buf, err)
		}
	}
	roundTrip("before")
	f.signal(syscall.SIGTERM)
	f.waitLog(5*time.Second, "stopping", func(e logEntry) bool { return e.str("msg") == "stopping: finishing in-flight requests" })
	waitFor(t, 5*time.Second, "listener closed", func() bool { return !isListening(t, vip) })
	if nc, err := net.DialTimeout("tcp", vip, time.Second); err == nil {
		nc.Close()
		t.Errorf("new connection accepted after SIGTERM")
	}
	roundTrip("after SIGTERM")
	c.Close()
	if code := f.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestTCPGraceExpires: a tcp-mode connection still open when global.grace
// ends is closed and the process exits 0.
func TestTCPGraceExpires(t *testing.T) {
	echo := newTCPBackend(t, "echo", func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	vip := freeAddr(t)
	f := startFulcrum(t, config{
		global:   "log_format = \"json\"\ngrace = \"300ms\"\n",
		services: []service{tcpService(vip, echo)},
	})
	c := dialTCP(t, vip)
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.signal(syscall.SIGTERM)
	if code := f.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("exited %s after SIGTERM, before grace 300ms with a connection open", d)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("client connection not closed at the end of grace: read %d, %v", n, err)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
}

// TestTCPNoRealServer: in tcp mode a client whose real servers all refuse
// is disconnected, with one log line.
func TestTCPNoRealServer(t *testing.T) {
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		listen: []string{vip},
		opts:   "mode = \"tcp\"\n",
		real:   []real{{name: "down1", address: freeAddr(t)}, {name: "down2", address: freeAddr(t)}},
	}}})
	c := dialTCP(t, vip)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("client not disconnected: read %d, %v", n, err)
	}
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if lines := f.logsWhere(func(e logEntry) bool { return !lifecycle[e.str("msg")] }); len(lines) != 1 {
		t.Errorf("%d log lines for one failed connection, want 1:\n%s", len(lines), joinLines(lines))
	}
}

// TestTCPMaxConns: with max_conns = 1 on the only real server a second
// connection waits in the queue until the first ends, or is closed when
// queue_timeout passes first.
func TestTCPMaxConns(t *testing.T) {
	echo := newTCPBackend(t, "echo", func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	tests := []struct {
		name         string
		queueTimeout string
		served       bool // the second connection is served once the first ends
	}{
		{"queued then served", "20s", true},
		{"queue timeout", "200ms", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vip := freeAddr(t)
			svc := tcpService(vip, echo)
			svc.opts += fmt.Sprintf("queue_timeout = %q\n", tt.queueTimeout)
			svc.real[0].opts = "max_conns = 1\n"
			startFulcrum(t, config{services: []service{svc}})

			first := dialTCP(t, vip)
			io.WriteString(first, "1")
			if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
				t.Fatalf("first connection: %v", err)
			}
			second := dialTCP(t, vip)
			io.WriteString(second, "2")
			second.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			buf := make([]byte, 1)
			n, err := second.Read(buf)
			if tt.served {
				if !isTimeout(err) {
					t.Fatalf("second connection got %q, %v while the first holds the only slot", buf[:n], err)
				}
				first.Close()
				second.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(second, buf); err != nil || buf[0] != '2' {
					t.Errorf("second connection after the first ended: %q, %v; want echo \"2\"", buf, err)
				}
				return
			}
			if err == nil || isTimeout(err) {
				t.Errorf("second connection not closed after queue_timeout: read %q, %v", buf[:n], err)
			}
		})
	}
}

// TestTCPIdleTimeout: a tcp-mode connection pair is closed once the client
// has sent nothing for timeouts.client and the real server nothing for
// timeouts.server; traffic in either direction keeps it open.
func TestTCPIdleTimeout(t *testing.T) {
	const idle = 600 * time.Millisecond
	tests := []struct {
		name     string
		serve    func(c *net.TCPConn) // the real server
		client   func(c *net.TCPConn) // runs while the pair should stay open
		wantOpen time.Duration        // the pair must still be open this long
	}{
		{
			name:  "silent both ways",
			serve: func(c *net.TCPConn) { io.Copy(io.Discard, c) },
		},
		{
			name: "server talks",
			serve: func(c *net.TCPConn) {
				for range 8 {
					if _, err := c.Write([]byte("tick")); err != nil {
						return
					}
					time.Sleep(idle / 3)
				}
				io.Copy(io.Discard, c)
			},
			client:   func(c *net.TCPConn) { io.ReadFull(c, make([]byte, 8*4)) },
			wantOpen: 2 * idle,
		},
		{
			name:  "client talks",
			serve: func(c *net.TCPConn) { io.Copy(io.Discard, c) },
			client: func(c *net.TCPConn) {
				for range 8 {
					c.Write([]byte("tock"))
					time.Sleep(idle / 3)
				}
			},
			wantOpen: 2 * idle,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTCPBackend(t, "idle", tt.serve)
			vip := freeAddr(t)
			s := tcpService(vip, srv)
			s.timeouts = fmt.Sprintf("client = %q\nserver = %q\n", idle, idle)
			startFulcrum(t, config{services: []service{s}})

			c := dialTCP(t, vip)
			start := time.Now()
			if tt.client != nil {
				tt.client(c)
			}
			// Now silent: fulcrum must close within the timeout (plus
			// timer slack), and not before the activity ended.
			c.SetReadDeadline(time.Now().Add(idle + 2*time.Second))
			_, err := io.Copy(io.Discard, c)
			closedAfter := time.Since(start)
			if err != nil {
				t.Fatalf("connection not closed by fulcrum after %v of silence: %v", closedAfter, err)
			}
			if closedAfter < tt.wantOpen || closedAfter < idle {
				t.Errorf("closed after %v; want it open at least %v", closedAfter, max(tt.wantOpen, idle))
			}
		})
	}
}
