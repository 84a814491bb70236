package proxy

import (
	"io"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// bufSize is the size of every pooled I/O buffer, and so the largest request
// or response head accepted (HAProxy's tune.bufsize default is the same).
const bufSize = 16 << 10

// Buffers are taken from a pool when a connection has bytes to move and
// given back while it is idle, so that ten thousand idle keep-alive clients
// hold no buffers at all.
var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

func getBuf() *[bufSize]byte  { return bufPool.Get().(*[bufSize]byte) }
func putBuf(b *[bufSize]byte) { bufPool.Put(b) }

// reader is a buffered reader over a connection whose buffer can be released
// while empty. Unlike bufio.Reader it lets a whole head be parsed in place:
// slices into buffered() stay valid until the next fill or discard.
type reader struct {
	conn net.Conn
	buf  *[bufSize]byte // nil while released
	r, w int

	// For TCP connections, waitFill reads through the raw descriptor.
	raw    syscall.RawConn
	rawFn  func(fd uintptr) bool // readFD, bound once
	rawErr error
	noWait bool // readFD returns at EAGAIN instead of waiting (tryFill)

	dl deadline // reads
}

// deadline remembers the deadline armed in one direction of a connection,
// so that it can be re-armed lazily.
type deadline struct{ at time.Time }

// due returns now+timeout and true when it should be armed: unless the armed
// deadline is no earlier than that less 1/16 of timeout, since a timer update
// on every request costs more than the precision is worth (a timeout may so
// fire up to 1/16 early).
func (d deadline) due(now time.Time, timeout time.Duration) (time.Time, bool) {
	want := now.Add(timeout)
	return want, want.Before(d.at) || want.Sub(d.at) > timeout/16
}

func (b *reader) setDeadline(t time.Time) {
	b.dl.at = t
	if b.conn != nil { // nil: an event loop holds the descriptor
		b.conn.SetReadDeadline(t)
	}
}

func (b *reader) extendDeadline(now time.Time, timeout time.Duration) {
	if t, ok := b.dl.due(now, timeout); ok {
		b.setDeadline(t)
	}
}

// init points the reader at a connection, keeping what is buffered. A
// socket's (TCP, a *proxiedConn or an fdConn; not TLS) is read through its
// raw descriptor.
func (b *reader) init(c net.Conn) {
	b.conn, b.raw, b.dl = c, nil, deadline{}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			b.raw = raw
			if b.rawFn == nil {
				b.rawFn = b.readFD
			}
		}
	}
}

// detach forgets the connection: an event loop reads its descriptor
// (fillFD) until a goroutine takes it again (init).
func (b *reader) detach() { b.conn, b.raw = nil, nil }

// waitFill is fill for a moment when the peer is between messages and may
// stay silent for long: the buffer is taken from the pool for the read and
// handed back before waiting whenever the read finds nothing (EAGAIN). So a
// connection idle between requests holds no buffer, at no extra system
// call. (The read cannot be skipped: Go's poller forgets readiness seen
// before the wait starts.)
func (b *reader) waitFill() error {
	if b.raw == nil {
		return b.fill()
	}
	return b.rawRead()
}

// rawRead reads once into the buffer through the raw descriptor, waiting in
// Go's poller (deadlines apply) while there is nothing to read.
func (b *reader) rawRead() error {
	b.rawErr = nil
	if err := b.raw.Read(b.rawFn); err != nil {
		return err
	}
	return b.rawErr
}

// readFD is the RawConn.Read callback. The socket is non-blocking, so
// read(2) is made as a raw system call: the goroutine keeps its P, and the
// scheduler does not hand the P to another thread when a loopback system
// call runs past sysmon's 20µs tick (net.Conn.Read would, costing a thread
// wake-up per request under load).
func (b *reader) readFD(fd uintptr) bool {
	for {
		if b.buf == nil {
			b.buf = getBuf()
		}
		p := b.buf[b.w:]
		if len(p) == 0 {
			b.rawErr = errFull
			return true
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			b.release() // nothing yet: wait without the buffer
			return b.noWait
		case errno != 0:
			b.rawErr = errno
		case n == 0:
			b.rawErr = io.EOF
		default:
			b.w += int(n)
		}
		return true
	}
}

// buffered returns the bytes read but not yet consumed.
func (b *reader) buffered() []byte {
	if b.buf == nil {
		return nil
	}
	return b.buf[b.r:b.w]
}

// discard consumes n buffered bytes.
func (b *reader) discard(n int) {
	b.r += n
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
}

// fill reads at least one more byte into the buffer, moving unread bytes to
// the front first. It returns errFull when the buffer holds bufSize unread
// bytes.
func (b *reader) fill() error {
	if !b.makeRoom() {
		return errFull
	}
	if b.raw != nil {
		return b.rawRead()
	}
	n, err := b.conn.Read(b.buf[b.w:])
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// makeRoom takes a buffer if there is none and moves unread bytes to its
// front if they reach its end; it reports false when it holds bufSize
// unread bytes.
func (b *reader) makeRoom() bool {
	if b.buf == nil {
		b.buf = getBuf()
	}
	if b.r > 0 && b.w == bufSize {
		b.w = copy(b.buf[:], b.buf[b.r:b.w])
		b.r = 0
	}
	return b.w < bufSize
}

// tryFill reads what has already arrived, without waiting, and reports
// whether it got bytes. It reports false, nil when nothing has arrived, when
// it cannot tell (no raw descriptor: TLS) or when the buffer is full.
func (b *reader) tryFill() (bool, error) {
	if b.raw == nil || !b.makeRoom() {
		return false, nil
	}
	w := b.w
	b.noWait = true
	err := b.rawRead()
	b.noWait = false
	return b.w > w, err
}

// fillFD reads what has arrived on fd, the connection's descriptor, into
// the buffer without waiting (an event loop's read: loop.go). It returns
// how many bytes came and whether the socket may hold more (the read
// filled all the room it had); err is io.EOF when the peer closed. The
// buffer goes back to the pool if nothing came and it is empty.
func (b *reader) fillFD(fd int) (n int, more bool, err error) {
	if !b.makeRoom() {
		return 0, false, errFull
	}
	w := b.w
	b.rawErr, b.noWait = nil, true
	b.readFD(uintptr(fd))
	b.noWait = false
	n = b.w - w
	return n, b.w == bufSize, b.rawErr
}

// release gives the buffer back to the pool if it holds no unread bytes.
func (b *reader) release() {
	if b.buf != nil && b.r == b.w {
		putBuf(b.buf)
		b.buf, b.r, b.w = nil, 0, 0
	}
}

// Read implements io.Reader, serving buffered bytes first.
func (b *reader) Read(p []byte) (int, error) {
	if b.buf != nil && b.r < b.w {
		n := copy(p, b.buf[b.r:b.w])
		b.discard(n)
		return n, nil
	}
	return b.conn.Read(p)
}

// writer is a buffered writer over a connection whose buffer can be released
// once flushed.
type writer struct {
	conn net.Conn
	raw  syscall.RawConn // the conn's descriptor when it is TCP, else nil
	buf  *[bufSize]byte
	n    int
	err  error    // first write error; later writes are dropped
	dl   deadline // writes

	rawFn  func(fd uintptr) bool // writeFD, bound once
	rawP   []byte                // what writeFD has left to write
	rawErr error

	// For an event loop's connection (loop.go): with noWait, a write the
	// socket cannot take whole leaves the rest in spill instead of
	// waiting, and later writes queue behind it; the loop sends spill
	// when the socket is writable again (sendSpill), a goroutine taking
	// the connection over sends it first (flushSpill).
	noWait bool
	spill  []byte
	fd     int // with noWait, the connection's descriptor, written to directly
}

// reset points the writer at a connection; raw is its descriptor (from the
// connection's reader), or nil.
func (w *writer) reset(c net.Conn, raw syscall.RawConn) {
	if c != w.conn || raw != w.raw {
		w.rebind(c, raw)
	}
	w.n, w.err = 0, nil
}

// rebind points the writer at another connection (or none: nil) to the
// same peer, keeping what it holds; raw is the connection's descriptor.
func (w *writer) rebind(c net.Conn, raw syscall.RawConn) {
	w.conn, w.raw, w.dl = c, raw, deadline{}
	if raw != nil && w.rawFn == nil {
		w.rawFn = w.writeFD
	}
}

// write writes p whole to the connection (with noWait, to the connection
// and spill).
func (w *writer) write(p []byte) error {
	if len(w.spill) > 0 {
		w.spill = append(w.spill, p...)
		return nil
	}
	if w.raw == nil && !w.noWait {
		_, err := w.conn.Write(p)
		return err
	}
	w.rawP, w.rawErr = p, nil
	var err error
	if w.noWait {
		w.writeFD(uintptr(w.fd))
	} else {
		err = w.raw.Write(w.rawFn)
	}
	if err == nil && w.rawErr == nil && len(w.rawP) > 0 { // noWait: the socket is full
		w.spill = append(w.spill[:0], w.rawP...)
	}
	w.rawP = nil
	if err != nil {
		return err
	}
	return w.rawErr
}

// sendSpill writes what it can of spill without waiting and reports
// whether all of it went.
func (w *writer) sendSpill() (bool, error) {
	p := w.spill
	w.spill = nil
	if err := w.write(p); err != nil {
		return false, err
	}
	return len(w.spill) == 0, nil
}

// flushSpill writes spill whole, waiting as needed: a goroutine takes the
// connection over from an event loop.
func (w *writer) flushSpill() error {
	w.noWait = false
	if len(w.spill) == 0 {
		return nil
	}
	_, err := w.sendSpill()
	return err
}

// writeFD is the RawConn.Write callback: a raw write(2), for the reason
// given at reader.readFD.
func (w *writer) writeFD(fd uintptr) bool {
	for len(w.rawP) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.rawP[0])), uintptr(len(w.rawP)))
		switch errno {
		case 0:
			w.rawP = w.rawP[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return w.noWait // socket buffer full: wait until writable, unless the event loop does
		default:
			w.rawErr = errno
			return true
		}
	}
	return true
}

func (w *writer) setDeadline(t time.Time) {
	w.dl.at = t
	if w.conn != nil { // nil: an event loop holds the descriptor
		w.conn.SetWriteDeadline(t)
	}
}

func (w *writer) extendDeadline(now time.Time, timeout time.Duration) {
	if t, ok := w.dl.due(now, timeout); ok {
		w.setDeadline(t)
	}
}

func (w *writer) grab() {
	if w.buf == nil {
		w.buf = getBuf()
	}
}

// Write buffers p, flushing when the buffer fills; large writes go straight
// to the connection.
func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.grab()
	if w.n+len(p) > bufSize {
		if err := w.flush(); err != nil {
			return 0, err
		}
		if len(p) >= bufSize {
			if err := w.write(p); err != nil {
				w.err = err
				return 0, err
			}
			return len(p), nil
		}
	}
	w.n += copy(w.buf[w.n:], p)
	return len(p), nil
}

func (w *writer) WriteString(s string) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.grab()
	if w.n+len(s) > bufSize {
		if err := w.flush(); err != nil {
			return 0, err
		}
		for len(s) > bufSize { // never happens for heads; keeps the contract
			if _, err := w.Write([]byte(s[:bufSize])); err != nil {
				return 0, err
			}
			s = s[bufSize:]
		}
	}
	w.n += copy(w.buf[w.n:], s)
	return len(s), nil
}

// spare returns the free space of the buffer as an empty slice, so that a
// value can be appended in place (nothing is allocated when it fits) and
// then written with Write, which copies it onto itself.
func (w *writer) spare() []byte {
	w.grab()
	return w.buf[w.n:w.n]
}

// flush writes the buffered bytes.
func (w *writer) flush() error {
	if w.err != nil {
		return w.err
	}
	if w.n == 0 {
		return nil
	}
	err := w.write(w.buf[:w.n])
	w.n = 0
	w.err = err
	return err
}

// release gives the buffer back once it is empty.
func (w *writer) release() {
	if w.buf != nil && w.n == 0 {
		putBuf(w.buf)
		w.buf = nil
	}
}
