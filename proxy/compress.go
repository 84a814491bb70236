package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/net/http/httpguts"

	"github.com/fulcrumlb/fulcrum/config"
)

// Compression (compress): the proxy gzips a response (RFC 9110 §8.4.1.3)
// when
//   - the client accepts gzip (Accept-Encoding, RFC 9110 §12.5.3: "gzip" or
//     "x-gzip" with a q above 0, or "*" when gzip is not named);
//   - the response is a 2xx with content (not 204, 205 or 206) to a request
//     other than HEAD, has no Content-Encoding of its own, and its
//     Cache-Control does not say no-transform (RFC 9111 §5.2.2.6);
//   - its type is text (text/*, JSON, JavaScript, XML, SVG: compressibleType)
//     and it is at least config.MinCompressSize bytes long, or of unknown
//     length (chunked, or delimited by the connection's close), which is
//     likely a stream worth compressing.
//
// The compressed body has no length known in advance: Content-Length goes,
// an HTTP/1.1 client gets it chunked and an HTTP/1.0 client until the
// connection closes. Vary gains Accept-Encoding, since the response now
// depends on it (RFC 9110 §12.5.5), and a strong ETag is made weak: the
// bytes differ from the real server's, which a strong validator would claim
// are the same (RFC 9110 §8.8.1), yet If-None-Match's weak comparison still
// matches it (§13.1.2). Accept-Ranges goes: a range asked for next would
// count in the real server's bytes (a 206 is never compressed), not in
// these. Compression runs at gzip.BestSpeed: it is CPU on
// the load balancer, shared by every service, and the fastest level
// already takes text to a fraction of its size; the better levels cost
// several times the CPU for a few per cent. Each piece of the body is
// compressed and sent on as it arrives, so that a stream (server-sent
// events) is not held back.
//
// The compressor is github.com/klauspost/compress's gzip, a drop-in for
// compress/gzip's: at BestSpeed it is some 30% faster on text, compresses a
// body sent in small pieces (each flushed) better, and holds 0.5 MiB of
// state against the standard library's 1.2 MiB, which counts for every
// compressed response in flight (a long stream holds its writer for its
// whole life).

// gzipWriter is the gzip compressor.
type gzipWriter = gzip.Writer

// gzipPool holds gzip writers between responses (HTTP/2 and HTTP/3), as
// gzipFlows does for HTTP/1.1: their state is costly to allocate.
var gzipPool = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

func getGzip(dst io.Writer) *gzipWriter {
	zw := gzipPool.Get().(*gzipWriter)
	zw.Reset(dst)
	return zw
}

func putGzip(zw *gzipWriter) {
	zw.Reset(io.Discard) // not to keep the response's writer alive
	gzipPool.Put(zw)
}

// codingPrefs is what the Accept-Encoding fields of a request say of gzip:
// each of gzip and "*" is unnamed (-1), refused (0, q=0) or accepted (1).
type codingPrefs struct{ gzip, any int8 }

func newCodingPrefs() codingPrefs { return codingPrefs{-1, -1} }

// add reads one Accept-Encoding field value.
func (p *codingPrefs) add(v string) {
	for v != "" {
		var elem string
		elem, v, _ = strings.Cut(v, ",")
		coding, params, _ := strings.Cut(elem, ";")
		coding = strings.TrimSpace(coding)
		var pref *int8
		switch {
		case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
			pref = &p.gzip
		case coding == "*":
			pref = &p.any
		default:
			continue
		}
		*pref = 1
		if !qPositive(params) {
			*pref = 0
		}
	}
}

// accepts reports whether gzip is acceptable: named with q > 0, or not named
// and "*" is.
func (p codingPrefs) accepts() bool { return p.gzip == 1 || (p.gzip < 0 && p.any == 1) }

// qPositive reports whether the parameters of an Accept-Encoding element
// give a weight above 0 (RFC 9110 §12.4.2: "q=" qvalue, the default 1). A
// weight that does not parse counts as 0: the coding is not taken on a
// guess.
func qPositive(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		value = strings.TrimSpace(value)
		// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
		if value == "" || len(value) > 5 || (value[0] != '0' && value[0] != '1') {
			return false
		}
		if len(value) > 1 && value[1] != '.' {
			return false
		}
		positive := value[0] == '1'
		for i := 2; i < len(value); i++ {
			c := value[i]
			if c < '0' || c > '9' || (value[0] == '1' && c != '0') {
				return false
			}
			positive = positive || c != '0'
		}
		return positive
	}
	return true
}

// compressibleType reports whether a Content-Type is text that gzip
// shrinks: text/*, application/json, application/javascript,
// application/xml, application/*+json, application/*+xml (RFC 6839 §3.1,
// §4.1) and image/svg+xml. Other images, audio, video and archives are
// compressed already.
func compressibleType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || sub == "" {
		return false
	}
	switch {
	case strings.EqualFold(typ, "text"):
		return true
	case strings.EqualFold(typ, "image"):
		return strings.EqualFold(sub, "svg+xml")
	case !strings.EqualFold(typ, "application"):
		return false
	}
	switch {
	case strings.EqualFold(sub, "json"), strings.EqualFold(sub, "javascript"), strings.EqualFold(sub, "xml"):
		return true
	case len(sub) > 5 && strings.EqualFold(sub[len(sub)-5:], "+json"):
		return true
	case len(sub) > 4 && strings.EqualFold(sub[len(sub)-4:], "+xml"):
		return true
	}
	return false
}

// gzipResponse is what of a response decides whether it is compressed.
type gzipResponse struct {
	head        bool  // the request was HEAD
	status      int   // the response's status
	length      int64 // its body's length; -1 if unknown
	contentType string
	encoded     bool // it has a Content-Encoding
	noTransform bool // Cache-Control: no-transform
}

// compressible reports whether a response the client accepts gzip for is
// compressed.
func (r *gzipResponse) compressible() bool {
	switch {
	case r.head, r.status < 200, r.status > 299, r.status == 204, r.status == 205, r.status == 206:
		return false
	case r.encoded, r.noTransform:
		return false
	case r.length >= 0 && r.length < config.MinCompressSize:
		return false
	}
	return compressibleType(r.contentType)
}

// weakETag returns a strong entity tag made weak (W/"x" for "x"); a weak
// one, or anything else, is returned unchanged.
func weakETag(v string) string {
	if strings.HasPrefix(v, `"`) {
		return "W/" + v
	}
	return v
}

// varyCovers reports whether Vary field values already name
// Accept-Encoding (or "*": every field).
func varyCovers(vary []string) bool {
	return httpguts.HeaderValuesContainsToken(vary, "Accept-Encoding") || httpguts.HeaderValuesContainsToken(vary, "*")
}

// HTTP/1.1 (clientConn): relayResponse decides with wantGzip; the head is
// rewritten field by field (gzipField, gzipFields) and the body compressed
// by copyGzip.

// gzipPlan is an HTTP/1.1 exchange's compression of its response.
type gzipPlan struct {
	on       bool
	varyDone bool // a Vary field of the response already covers Accept-Encoding
	varySeen bool // while writing the head: Accept-Encoding was added to a Vary field
}

// wantGzip decides whether the response in cc.resp, whose body framing is
// noBody or not, is compressed; the service has compress on.
func (cc *clientConn) wantGzip(noBody bool) gzipPlan {
	if noBody || cc.isHead {
		return gzipPlan{}
	}
	prefs := newCodingPrefs()
	for i := range cc.req.headers {
		if h := &cc.req.headers[i]; equalFold(h.name, "accept-encoding") {
			prefs.add(bytesString(h.value))
		}
	}
	if !prefs.accepts() {
		return gzipPlan{}
	}
	resp := &cc.resp
	r := gzipResponse{status: resp.status, length: resp.contentLength}
	if resp.chunked {
		r.length = -1
	}
	var plan gzipPlan
	for i := range resp.headers {
		h := &resp.headers[i]
		switch {
		case equalFold(h.name, "content-type"):
			r.contentType = bytesString(h.value)
		case equalFold(h.name, "content-encoding"):
			r.encoded = r.encoded || len(h.value) > 0
		case equalFold(h.name, "cache-control"):
			r.noTransform = r.noTransform || hasToken(h.value, "no-transform")
		case equalFold(h.name, "vary"):
			plan.varyDone = plan.varyDone || hasToken(h.value, "accept-encoding") || hasToken(h.value, "*")
		}
	}
	plan.on = r.compressible()
	return plan
}

// gzipField writes a response field as it goes with a compressed body, and
// reports whether it did (or dropped it); false leaves it to be written as
// it is.
func (cc *clientConn) gzipField(w *writer, name, value []byte) bool {
	switch {
	case equalFold(name, "content-length"), equalFold(name, "transfer-encoding"):
		return true // framed anew
	case equalFold(name, "accept-ranges"):
		return true // ranges would count in the real server's bytes
	case equalFold(name, "etag") && len(value) > 0 && value[0] == '"':
		w.Write(name)
		w.WriteString(": W/")
		w.Write(value)
		w.WriteString("\r\n")
		return true
	case equalFold(name, "vary") && !cc.gz.varyDone && !cc.gz.varySeen:
		w.Write(name)
		w.WriteString(": ")
		if len(value) > 0 {
			w.Write(value)
			w.WriteString(", ")
		}
		w.WriteString("Accept-Encoding\r\n")
		cc.gz.varySeen = true
		return true
	}
	return false
}

// gzipFields writes the fields a compressed body adds to the head.
func (cc *clientConn) gzipFields(w *writer) {
	w.WriteString("Content-Encoding: gzip\r\n")
	if cc.req.minor >= 1 {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !cc.gz.varyDone && !cc.gz.varySeen {
		w.WriteString("Vary: Accept-Encoding\r\n")
	}
}

// copyGzip moves the real server's body, of Content-Length cc.resp's (-1:
// until the real server closes) or chunked, to the client compressed. The
// flow's n counts the body's bytes before compression, as the real server
// sent them.
func (cc *clientConn) copyGzip(f *flow, chunked bool) error {
	g := gzipFlows.Get().(*gzipFlow)
	g.flow, g.chunked, g.out, g.nout, g.dirty = *f, cc.req.minor >= 1, getBuf(), 0, false
	g.flow.hold = g.holdFn
	g.zw.Reset(g)
	var err error
	if chunked {
		err = g.copyChunked()
	} else {
		err = g.copySized(cc.resp.contentLength)
	}
	*f = g.flow
	f.hold = nil
	putBuf(g.out)
	g.flow, g.out = flow{}, nil // not to keep the connections alive
	gzipFlows.Put(g)
	return err
}

// gzipFlow compresses a body on its way from the real server to an
// HTTP/1.1 client: it reads through its flow's source, and is itself its
// gzip writer's destination, framing what comes out in chunks (or not, for
// HTTP/1.0) to the flow's destination.
type gzipFlow struct {
	flow
	zw      *gzipWriter
	chunked bool           // the client gets chunks; else the body ends at the connection's close
	out     *[bufSize]byte // compressed bytes not yet sent on
	nout    int
	dirty   bool         // bytes went into zw since it was last flushed
	holdFn  func() error // flushHeld, bound once: the flow's hold
}

// gzipFlows holds gzipFlows between responses, each with its gzip writer.
var gzipFlows = sync.Pool{New: func() any {
	g := new(gzipFlow)
	g.zw, _ = gzip.NewWriterLevel(g, gzip.BestSpeed)
	g.holdFn = g.flushHeld
	return g
}}

// Write takes compressed bytes from zw.
func (g *gzipFlow) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if g.nout == len(g.out) {
			if err := g.emit(); err != nil {
				return 0, err
			}
		}
		c := copy(g.out[g.nout:], p)
		g.nout += c
		p = p[c:]
	}
	return n, nil
}

// emit sends the compressed bytes on, as one chunk.
func (g *gzipFlow) emit() error {
	if g.nout == 0 {
		return nil
	}
	if g.chunked {
		line := strconv.AppendInt(g.dst.spare(), int64(g.nout), 16)
		line = append(line, "\r\n"...)
		if err := g.write(line); err != nil {
			return err
		}
	}
	if err := g.write(g.out[:g.nout]); err != nil {
		return err
	}
	g.nout = 0
	if g.chunked {
		return g.write(crlf)
	}
	return nil
}

var (
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n") // the trailer section follows
)

// data compresses body bytes.
func (g *gzipFlow) data(b []byte) error {
	if _, err := g.zw.Write(b); err != nil {
		return err
	}
	g.dirty = true
	g.n += int64(len(b))
	return nil
}

// flushHeld sends the client what the compressor holds, before the flow
// waits for more of the body: the real server may be slow, or streaming.
func (g *gzipFlow) flushHeld() error {
	if !g.dirty {
		return nil
	}
	g.dirty = false
	if err := g.zw.Flush(); err != nil {
		return err
	}
	return g.emit()
}

// copySized compresses a body of n bytes, or of all until the real server
// closes when n < 0, and ends it.
func (g *gzipFlow) copySized(n int64) error {
	if err := g.copyN(n); err != nil {
		return err
	}
	if err := g.end(); err != nil {
		return err
	}
	if g.chunked {
		return g.write(crlf) // an empty trailer section
	}
	return nil
}

// copyN compresses n bytes of body, or all until the real server closes
// when n < 0.
func (g *gzipFlow) copyN(n int64) error {
	for n != 0 {
		b := g.src.buffered()
		if len(b) == 0 {
			if err := g.fill(); err != nil {
				if n < 0 && err == io.EOF && g.srcErr {
					g.srcErr = false
					return nil
				}
				return unexpectedEOF(err)
			}
			continue
		}
		if n > 0 && int64(len(b)) > n {
			b = b[:n]
		}
		if err := g.data(b); err != nil {
			return err
		}
		g.src.discard(len(b))
		if n > 0 {
			n -= int64(len(b))
		}
	}
	return nil
}

// end completes the compressed body (gzip's trailer), and for chunks
// writes the last chunk: the caller writes the trailer section.
func (g *gzipFlow) end() error {
	if err := g.zw.Close(); err != nil {
		return err
	}
	if err := g.emit(); err != nil {
		return err
	}
	if g.chunked {
		return g.write(lastChunk)
	}
	return nil
}

// copyChunked compresses a chunked body's data (RFC 9112 §7.1); its
// trailer section follows the last chunk to an HTTP/1.1 client, and is
// dropped for an HTTP/1.0 one.
func (g *gzipFlow) copyChunked() error {
	for {
		l, err := g.line(maxChunkLine)
		if err != nil {
			return err
		}
		size, ok := parseChunkSize(l)
		if !ok {
			g.srcErr = true
			return errBadChunk
		}
		g.src.discard(len(l))
		if size == 0 {
			break
		}
		if err := g.copyN(size); err != nil {
			return err
		}
		l, err = g.line(2)
		if err != nil || !isLineEnd(l) {
			g.srcErr = true
			return errBadChunk
		}
		g.src.discard(len(l))
	}
	if err := g.end(); err != nil {
		return err
	}
	for total := 0; ; {
		l, err := g.line(bufSize)
		if err != nil {
			return err
		}
		total += len(l)
		if total > bufSize {
			g.srcErr = true
			return errTrailers
		}
		if err := g.passLine(l, g.chunked); err != nil {
			return err
		}
		if isLineEnd(l) {
			return nil
		}
	}
}

// HTTP/2, HTTP/3 and net/http's HTTP/1.1 (h2exchange): relay decides with
// startGzip, and copyBody writes through x.gz.

// startGzip decides whether resp is compressed for the client (the service
// has compress on) and if so rewrites the head in x.w and sets x.gz.
// resp.ContentLength becomes -1: each piece is then sent as it comes.
func (x *h2exchange) startGzip(resp *http.Response) bool {
	prefs := newCodingPrefs()
	for _, v := range x.r.Header["Accept-Encoding"] {
		prefs.add(v)
	}
	if !prefs.accepts() {
		return false
	}
	r := gzipResponse{
		head:        x.r.Method == http.MethodHead,
		status:      resp.StatusCode,
		length:      resp.ContentLength,
		contentType: resp.Header.Get("Content-Type"),
		encoded:     resp.Header.Get("Content-Encoding") != "",
		noTransform: httpguts.HeaderValuesContainsToken(resp.Header["Cache-Control"], "no-transform"),
	}
	if !r.compressible() {
		return false
	}
	h := x.w.Header()
	delete(h, "Content-Length")
	delete(h, "Accept-Ranges") // ranges would count in the real server's bytes
	h["Content-Encoding"] = []string{"gzip"}
	if !varyCovers(h["Vary"]) {
		h["Vary"] = append(h["Vary"][:len(h["Vary"]):len(h["Vary"])], "Accept-Encoding")
	}
	if et := h["Etag"]; len(et) == 1 {
		h["Etag"] = []string{weakETag(et[0])}
	}
	resp.ContentLength = -1
	x.gz = getGzip(x.w)
	return true
}

// endGzip completes the compressed body; false when that failed (the
// exchange is then aborted).
func (x *h2exchange) endGzip() bool {
	x.down.arm(sideClient, x.cfg.Timeouts.Client)
	err := x.gz.Close()
	x.down.disarm()
	if err != nil {
		x.errMsg, x.err, x.abort = "write to client failed", err, true
		return false
	}
	// What Close wrote leaves with the end of the stream, when the
	// handler returns, as the last piece of a body does.
	x.unflushed = true
	return true
}

// releaseGzip gives x.gz back to the pool.
func (x *h2exchange) releaseGzip() {
	if x.gz != nil {
		putGzip(x.gz)
		x.gz = nil
	}
}

// writeBody writes body bytes to the client: through x.gz when the
// response is compressed.
func (x *h2exchange) writeBody(p []byte) (int, error) {
	if x.gz != nil {
		return x.gz.Write(p)
	}
	return x.w.Write(p)
}
