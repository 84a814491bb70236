package proxy

import (
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pipe moves bytes both ways between a client and a real server until both
// directions have ended, then closes both. A direction ends at EOF, which is
// passed on as a half-close (CloseWrite) so the other direction can go on
// (RFC 9293 §3.6); an error ends both. Between TCP connections io.Copy uses
// splice(2), so the bytes never enter user space.
//
// The pair is closed when the client has sent nothing for clientIdle and the
// real server nothing for serverIdle. Since splice gives no per-read hook,
// idleness is read from the kernel (TCP_INFO's time since the last data
// received) by a timer, at no cost per byte.
func pipe(client, server net.Conn, clientIdle, serverIdle time.Duration) (up, down int64) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			server.Close()
		})
	}
	stop := watchIdle(client, server, clientIdle, serverIdle, closeBoth)
	defer stop()

	done := make(chan int64, 1)
	go func() {
		n, err := io.Copy(server, client)
		endDirection(server, err, closeBoth)
		done <- n
	}()
	down, err := io.Copy(client, server)
	endDirection(client, err, closeBoth)
	up = <-done
	closeBoth()
	return up, down
}

// endDirection half-closes dst after a clean EOF, or closes everything after
// an error (a reset on one side must reach the other).
func endDirection(dst net.Conn, err error, closeBoth func()) {
	if err != nil {
		closeBoth()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	closeBoth()
}

// watchIdle calls onIdle once both connections have received no data for
// their timeouts. It returns a function that stops watching.
func watchIdle(client, server net.Conn, clientIdle, serverIdle time.Duration, onIdle func()) (stop func()) {
	var t *time.Timer
	var mu sync.Mutex
	stopped := false
	check := func() {
		ci, ok1 := sinceLastData(client)
		si, ok2 := sinceLastData(server)
		if !ok1 || !ok2 {
			return // not TCP: no watching (tests with pipes)
		}
		if ci >= clientIdle && si >= serverIdle {
			onIdle()
			return
		}
		next := max(clientIdle-ci, serverIdle-si, 10*time.Millisecond)
		mu.Lock()
		if !stopped {
			t.Reset(next)
		}
		mu.Unlock()
	}
	mu.Lock()
	t = time.AfterFunc(min(clientIdle, serverIdle), check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// sinceLastData returns how long ago the connection last received data.
func sinceLastData(c net.Conn) (time.Duration, bool) {
	if u, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS
		c = u.NetConn()
	}
	raw := rawOf(c) // a *proxiedConn or an fdConn too
	if raw == nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, true
}
