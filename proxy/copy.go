package proxy

import (
	"bytes"
	"errors"
	"io"
	"time"
)

// Moving body bytes from a reader to a writer, by the message's framing
// (RFC 9112 §6). Every function refreshes deadlines as bytes move, so a
// timeout bounds the silence between bytes, not the whole transfer.

const (
	// spliceMin: a remaining body at least this large is moved by the kernel
	// (splice) when both ends are TCP connections.
	spliceMin = 64 << 10
	// spliceSegment: deadlines are refreshed after each segment.
	spliceSegment = 1 << 20
	// maxChunkLine bounds a chunk-size line with extensions.
	maxChunkLine = 4096
)

var (
	errBadChunk = errors.New("malformed chunked encoding")
	errTrailers = errors.New("trailer section too large")
)

// flow is one direction of a transfer with its idle timeouts.
type flow struct {
	src          *reader
	dst          *writer
	readTimeout  time.Duration
	writeTimeout time.Duration
	n            int64 // body bytes moved
	// now is the time deadlines are counted from until the first read or
	// write that must wait; zero means "read the clock".
	now time.Time
	// srcErr tells a failure to read from failures to write, so the caller
	// knows which side failed.
	srcErr bool
	// hold, if set, pushes bytes held outside dst (a compressor's) into
	// it; fill calls it before a wait, as it flushes dst.
	hold func() error
}

// clock returns the time to count deadlines from. A fill or a flush that
// reaches the connection may block, so later ones read the clock afresh.
func (f *flow) clock() time.Time {
	if f.now.IsZero() {
		return time.Now()
	}
	now := f.now
	f.now = time.Time{}
	return now
}

func (f *flow) fill() error {
	// Armed first: a lapsed deadline fails even a read that does not wait.
	f.src.extendDeadline(f.clock(), f.readTimeout)
	if f.dst.n > 0 || f.hold != nil {
		// Bytes wait for the destination: they go out before a wait for
		// more, so that a stream (server-sent events, a slow upload) is
		// not held back until a buffer fills. What has arrived already is
		// taken first, so that a fast body still moves in full buffers.
		got, err := f.src.tryFill()
		if err != nil {
			f.srcErr = true
			return err
		}
		if got {
			return nil
		}
		if f.hold != nil {
			if err := f.hold(); err != nil {
				return err
			}
		}
		if err := f.flush(); err != nil {
			return err
		}
	}
	if err := f.src.fill(); err != nil {
		f.srcErr = true
		return err
	}
	return nil
}

func (f *flow) write(p []byte) error {
	if f.dst.n+len(p) > bufSize { // this write will reach the connection
		f.dst.extendDeadline(f.clock(), f.writeTimeout)
	}
	_, err := f.dst.Write(p)
	return err
}

// copyN moves exactly n bytes.
func (f *flow) copyN(n int64) error {
	for n > 0 {
		b := f.src.buffered()
		if len(b) == 0 {
			if n >= spliceMin && f.spliceable() {
				return f.splice(n)
			}
			if err := f.fill(); err != nil {
				return unexpectedEOF(err)
			}
			continue
		}
		if int64(len(b)) > n {
			b = b[:n]
		}
		if err := f.write(b); err != nil {
			return err
		}
		f.src.discard(len(b))
		f.n += int64(len(b))
		n -= int64(len(b))
	}
	return nil
}

// spliceable reports whether both ends are plain TCP connections, so that
// io.Copy moves bytes with splice(2) and no user-space copy.
func (f *flow) spliceable() bool {
	return tcpOf(f.src.conn) != nil && tcpOf(f.dst.conn) != nil
}

func (f *flow) splice(n int64) error {
	f.src.release()
	if err := f.flush(); err != nil {
		return err
	}
	// The *net.TCPConns themselves: splice(2) is io.Copy's path only
	// between them (a *proxiedConn is unwrapped).
	dst, src := tcpOf(f.dst.conn), tcpOf(f.src.conn)
	for n > 0 {
		seg := min(n, spliceSegment)
		now := time.Now()
		f.src.setDeadline(now.Add(f.readTimeout))
		f.dst.setDeadline(now.Add(f.writeTimeout))
		m, err := io.CopyN(dst, src, seg)
		f.n += m
		n -= m
		if err != nil {
			return unexpectedEOF(err) // which side failed is not known here
		}
		if m < seg {
			f.srcErr = true
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

func (f *flow) flush() error {
	if f.dst.n == 0 {
		return f.dst.err
	}
	f.dst.extendDeadline(f.clock(), f.writeTimeout)
	return f.dst.flush()
}

// copyUntilEOF moves bytes until the source closes (a response delimited by
// the connection's end, RFC 9112 §6.3 rule 8).
func (f *flow) copyUntilEOF() error {
	for {
		if b := f.src.buffered(); len(b) > 0 {
			if err := f.write(b); err != nil {
				return err
			}
			f.src.discard(len(b))
			f.n += int64(len(b))
		}
		if err := f.fill(); err != nil {
			if err == io.EOF {
				f.srcErr = false
				return nil
			}
			return err
		}
	}
}

// line returns the next line (with its line end) from the source, reading
// as needed; it is valid until the next fill or discard.
func (f *flow) line(max int) ([]byte, error) {
	for {
		b := f.src.buffered()
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i+1 > max {
				return nil, errBadChunk
			}
			return b[:i+1], nil
		}
		if len(b) >= max {
			return nil, errBadChunk
		}
		if err := f.fill(); err != nil {
			return nil, unexpectedEOF(err)
		}
	}
}

// copyChunked moves a chunked body (RFC 9112 §7.1), validating its framing.
// The framing is passed on as it is; with dechunk only the data is written
// (for an HTTP/1.0 recipient, which closes to end the body).
func (f *flow) copyChunked(dechunk bool) error {
	for {
		l, err := f.line(maxChunkLine)
		if err != nil {
			return err
		}
		size, ok := parseChunkSize(l)
		if !ok {
			f.srcErr = true
			return errBadChunk
		}
		if err := f.passLine(l, !dechunk); err != nil {
			return err
		}
		if size == 0 {
			break
		}
		if err := f.copyN(size); err != nil { // n counts data bytes only
			return err
		}
		l, err = f.line(2)
		if err != nil || !isLineEnd(l) {
			f.srcErr = true
			return errBadChunk
		}
		if err := f.passLine(l, !dechunk); err != nil {
			return err
		}
	}
	// Trailer section: field lines up to an empty line.
	for total := 0; ; {
		l, err := f.line(bufSize)
		if err != nil {
			return err
		}
		total += len(l)
		if total > bufSize {
			f.srcErr = true
			return errTrailers
		}
		if err := f.passLine(l, !dechunk); err != nil {
			return err
		}
		if isLineEnd(l) {
			return nil
		}
	}
}

// passLine consumes a framing line from the source, writing it on unless
// the framing is being removed.
func (f *flow) passLine(l []byte, keep bool) error {
	if keep {
		if err := f.write(l); err != nil {
			return err
		}
	}
	f.src.discard(len(l))
	return nil
}

func isLineEnd(l []byte) bool { return string(l) == "\r\n" || string(l) == "\n" }

// parseChunkSize parses "hex-size [; extensions] CRLF".
func parseChunkSize(l []byte) (int64, bool) {
	l = bytes.TrimRight(l, "\r\n")
	if i := bytes.IndexByte(l, ';'); i >= 0 {
		l = l[:i]
	}
	l = trimOWS(l)
	if len(l) == 0 || len(l) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range l {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | int64(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
