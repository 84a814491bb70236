package proxy

import (
	"crypto/tls"
	"errors"
	"net"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2guard sits between a client's TLS connection and x/net's HTTP/2 server
// and reads the client's frames as they pass, to put right two things x/net
// does otherwise than RFC 9113 asks (h2spec 6.5.3/1 and 8.1.2.2):
//
//   - A SETTINGS frame may list a setting more than once; its values are
//     processed in order (§6.5.3), so the last one holds. x/net ends the
//     connection instead. The guard passes such a frame on with each
//     setting once, at its last value, which has the same effect.
//   - A request carrying a connection-specific field (Connection,
//     Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade, or TE other
//     than "trailers") is malformed (§8.2.2) and must not be processed as a
//     request. x/net answers it with a 400 of its own, the request never
//     reaching the proxy. The guard decodes every header block with an
//     HPACK decoder of its own, in step with x/net's, and on such a field
//     ends the connection before x/net sees the block's last frame: a
//     connection error, which §5.4.1 allows in place of a stream error.
//
// Frames of other types, and the payload of DATA frames, pass without
// being held back or copied more than once.
type h2guard struct {
	net.Conn        // the TLS connection; writes, deadlines and Close go straight to it
	buf      []byte // bytes read but not yet passed on: the start of a frame
	out      []byte // a checked frame (or frame header) to pass on next
	preface  int    // bytes of the client preface still to pass (§3.4)
	pass     int    // payload bytes of the current frame that pass unexamined
	dec      *hpack.Decoder
	bad      string // the connection-specific field of the header block being decoded
	off      bool   // inspection ended (a frame x/net will refuse anyway): all passes
	err      error  // the error to return once buf and out are empty
}

// errH2Malformed ends a connection whose client sent a malformed request.
var errH2Malformed = errors.New("HTTP/2 request with a connection-specific header field (RFC 9113 §8.2.2)")

// Frame types and flags (RFC 9113 §6) the guard reads.
const (
	h2FrameHeaders      = 0x1
	h2FrameSettings     = 0x4
	h2FrameContinuation = 0x9
	h2FlagAck           = 0x1
	h2FlagEndHeaders    = 0x4
	h2FlagPadded        = 0x8
	h2FlagPriority      = 0x20
	h2FrameHeaderLen    = 9
)

func newH2Guard(c net.Conn) *h2guard {
	g := &h2guard{Conn: c, preface: len(http2.ClientPreface)}
	// As x/net's decoder: the default table size, which the server never
	// changes, and no string longer than the whole head may be.
	g.dec = hpack.NewDecoder(4096, g.field)
	g.dec.SetMaxStringLength(bufSize)
	return g
}

// ConnectionState lets x/net see the TLS connection's state, as it would
// the *tls.Conn's.
func (g *h2guard) ConnectionState() tls.ConnectionState {
	if cs, ok := g.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return cs.ConnectionState()
	}
	return tls.ConnectionState{}
}

// field is the HPACK decoder's emit function.
func (g *h2guard) field(f hpack.HeaderField) {
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		g.bad = f.Name
	case "te":
		if f.Value != "trailers" {
			g.bad = f.Name
		}
	}
}

func (g *h2guard) Read(p []byte) (int, error) {
	for {
		if len(g.out) > 0 {
			n := copy(p, g.out)
			g.out = g.out[n:]
			return n, nil
		}
		if through := g.through(); through > 0 {
			if len(g.buf) > 0 { // what was read ahead goes first
				n := copy(p, g.buf[:min(through, len(g.buf))])
				g.consume(n)
				g.passed(n)
				return n, nil
			}
			if g.err != nil {
				return 0, g.err
			}
			n, err := g.Conn.Read(p[:min(through, len(p))])
			g.passed(n)
			return n, err
		}
		if g.err != nil {
			return 0, g.err
		}
		if g.frame() {
			continue
		}
		if err := g.fill(); err != nil {
			// What is buffered goes on as it is: x/net reads the
			// error after it.
			g.err, g.off = err, true
		}
	}
}

// through returns how many of the next bytes pass without a look.
func (g *h2guard) through() int {
	switch {
	case g.off:
		if len(g.buf) > 0 {
			return len(g.buf)
		}
		if g.err != nil {
			return 0
		}
		return 1 << 30
	case g.preface > 0:
		return g.preface
	}
	return g.pass
}

// passed counts n bytes passed unexamined.
func (g *h2guard) passed(n int) {
	switch {
	case g.off:
	case g.preface > 0:
		g.preface -= n
	default:
		g.pass -= n
	}
}

func (g *h2guard) consume(n int) { g.buf = g.buf[:copy(g.buf, g.buf[n:])] }

// fill reads more of the frame being gathered.
func (g *h2guard) fill() error {
	if len(g.buf) == cap(g.buf) {
		g.buf = append(g.buf, make([]byte, max(4096, cap(g.buf)))...)[:len(g.buf)]
	}
	n, err := g.Conn.Read(g.buf[len(g.buf):cap(g.buf)])
	g.buf = g.buf[:len(g.buf)+n]
	if n > 0 {
		return nil
	}
	return err
}

// frame takes the frame at the start of buf, once enough of it is there:
// it reports false when more bytes are needed.
func (g *h2guard) frame() bool {
	if len(g.buf) < h2FrameHeaderLen {
		return false
	}
	length := int(g.buf[0])<<16 | int(g.buf[1])<<8 | int(g.buf[2])
	typ, flags := g.buf[3], g.buf[4]
	examined := typ == h2FrameHeaders || typ == h2FrameContinuation || (typ == h2FrameSettings && flags&h2FlagAck == 0)
	if !examined || length > h2MaxFrameSize {
		// x/net ends the connection on a frame over the size it
		// advertised: nothing more to look at.
		g.off = g.off || examined
		g.out = append(g.out[:0], g.buf[:h2FrameHeaderLen]...)
		g.consume(h2FrameHeaderLen)
		g.pass = length
		return true
	}
	end := h2FrameHeaderLen + length
	if len(g.buf) < end {
		return false
	}
	f := g.buf[:end]
	switch typ {
	case h2FrameSettings:
		g.out = appendSettingsOnce(g.out[:0], f)
	default:
		if g.headerBlock(f, typ, flags) {
			g.out = append(g.out[:0], f...)
		}
	}
	g.consume(end)
	return true
}

// headerBlock feeds a HEADERS or CONTINUATION frame's fragment to the
// decoder; it reports false (and sets err) when the block it ends is
// malformed.
func (g *h2guard) headerBlock(f []byte, typ, flags byte) bool {
	p := f[h2FrameHeaderLen:]
	if typ == h2FrameHeaders {
		if flags&h2FlagPadded != 0 {
			if len(p) < 1 || int(p[0]) > len(p)-1 {
				g.off = true // x/net ends the connection (§6.2)
				return true
			}
			p = p[1 : len(p)-int(p[0])]
		}
		if flags&h2FlagPriority != 0 {
			if len(p) < 5 {
				g.off = true
				return true
			}
			p = p[5:]
		}
	}
	if _, err := g.dec.Write(p); err != nil {
		g.off = true // a COMPRESSION_ERROR for x/net too
		return true
	}
	if flags&h2FlagEndHeaders == 0 {
		return true
	}
	if err := g.dec.Close(); err != nil {
		g.off = true
		return true
	}
	if g.bad != "" {
		g.err = errH2Malformed
		return false
	}
	return true
}

// appendSettingsOnce appends SETTINGS frame f with each setting once, at
// the last value the frame gives it, in the order of first appearance.
// A frame whose length is not a multiple of 6 goes as it is: x/net answers
// it with FRAME_SIZE_ERROR (§6.5).
func appendSettingsOnce(dst, f []byte) []byte {
	p := f[h2FrameHeaderLen:]
	// Over 100 settings x/net refuses the frame anyway; below, the
	// quadratic search costs nothing.
	if len(p)%6 != 0 || len(p) > 100*6 || !hasDuplicateSetting(p) {
		return append(dst, f...)
	}
	dst = append(dst, f[:h2FrameHeaderLen]...)
	start := len(dst)
	for i := 0; i < len(p); i += 6 {
		id := p[i : i+2]
		j := start
		for ; j < len(dst); j += 6 {
			if dst[j] == id[0] && dst[j+1] == id[1] {
				break
			}
		}
		if j < len(dst) {
			copy(dst[j+2:j+6], p[i+2:i+6]) // a later value replaces the earlier
		} else {
			dst = append(dst, p[i:i+6]...)
		}
	}
	n := len(dst) - start
	dst[start-h2FrameHeaderLen], dst[start-h2FrameHeaderLen+1], dst[start-h2FrameHeaderLen+2] = byte(n>>16), byte(n>>8), byte(n)
	return dst
}

func hasDuplicateSetting(p []byte) bool {
	for i := 0; i < len(p); i += 6 {
		for j := i + 6; j < len(p); j += 6 {
			if p[i] == p[j] && p[i+1] == p[j+1] {
				return true
			}
		}
	}
	return false
}
