package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An event loop's sockets are kept out of Go's poller (loop.go): a socket
// both the runtime's epoll set and a loop's watch wakes the runtime's
// poller thread on every edge, for nothing, and on a busy machine those
// wake-ups cost more than the loops save. So a loop holds a connection as
// a bare descriptor of its own, and a goroutine that takes an exchange
// over is given a duplicate wrapped as an fdConn, which Go's poller
// watches until the goroutine hands the connection back and closes it.

// detachFD returns a duplicate of c's descriptor and closes c, which takes
// c out of Go's poller; the socket stays open through the duplicate. c
// must be a plain socket (not TLS).
func detachFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(d uintptr) { fd, derr = dupFD(int(d)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	c.Close()
	return fd, nil
}

func dupFD(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// fdConn is a socket a goroutine serves for an event loop: a duplicate of
// the loop's descriptor in Go's poller (os.File gives it deadlines and
// blocking reads and writes). Closing it leaves the socket open through
// the loop's descriptor. Errors are reported as the net package reports
// them, so that callers need not tell the two kinds of connection apart.
//
// Unlike a *net.TCPConn it offers no ReadFrom or WriteTo, so io.Copy moves
// its bytes through a buffer rather than splice(2): a goroutine holds such
// a connection only for the exchanges a loop cannot serve.
type fdConn struct {
	f             *os.File
	local, remote net.Addr
}

var _ net.Conn = (*fdConn)(nil)

// newFDConn wraps a duplicate of fd, the event loop's descriptor of a
// non-blocking socket, whose addresses are local and remote.
func newFDConn(fd int, local, remote net.Addr) (*fdConn, error) {
	d, err := dupFD(fd)
	if err != nil {
		return nil, err
	}
	// Non-blocking, the descriptor is one os.NewFile adds to Go's poller.
	return &fdConn{f: os.NewFile(uintptr(d), "socket"), local: local, remote: remote}, nil
}

func (c *fdConn) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	return n, c.opError("read", err)
}

func (c *fdConn) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	return n, c.opError("write", err)
}

func (c *fdConn) Close() error { return c.opError("close", c.f.Close()) }

// CloseWrite shuts the sending direction down (a half-close), as
// (*net.TCPConn).CloseWrite does.
func (c *fdConn) CloseWrite() error {
	raw, err := c.f.SyscallConn()
	if err != nil {
		return c.opError("close", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return c.opError("close", err)
	}
	return c.opError("close", serr)
}

func (c *fdConn) LocalAddr() net.Addr  { return c.local }
func (c *fdConn) RemoteAddr() net.Addr { return c.remote }

func (c *fdConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *fdConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *fdConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// SyscallConn gives the raw descriptor, whose Read and Write wait in Go's
// poller (reader.readFD, writer.writeFD).
func (c *fdConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// opError turns an os.File error into the *net.OpError a net.Conn returns:
// os.ErrClosed becomes net.ErrClosed, and a timeout stays one.
func (c *fdConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if err == os.ErrClosed {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}
