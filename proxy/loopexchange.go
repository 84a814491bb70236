package proxy

import (
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// How an event loop (loop.go) serves one exchange: it reads the request
// head, sends the request on a pooled real-server connection, and relays an
// answer that fits a buffer, each step as its descriptors become ready;
// what it cannot finish this way goes to a goroutine (away).

// read takes what the client sent (and what it pipelined, buffered
// already), and serves the request once its head is whole.
func (l *evloop) read(cc *clientConn) {
	for {
		_, more, err := cc.in.fillFD(cc.lc.fd)
		// After an error (the client closed), the next read meets it again.
		cc.lc.readable = more || err != nil
		n := cc.bufferedHead()
		if cc.lc.state == lcIdle {
			if len(cc.in.buffered()) == 0 {
				if err != nil { // closed, or reset, between requests
					l.end(cc)
				}
				return
			}
			cc.lc.state = lcHead
			cc.startExchange(l.now)
			cc.lc.due = cc.start.Add(cc.cfg.Timeouts.ClientHeader)
		}
		switch {
		case n > 0:
			l.request(cc, n)
			return
		case err != nil: // closed, or a head larger than the buffer
			l.done(cc, cc.headError(err))
			return
		case !more:
			return // the rest of the head is still to come
		}
	}
}

// request serves the request whose head, n bytes, is in the buffer.
func (l *evloop) request(cc *clientConn, n int) {
	if done, keep := cc.prepareHead(n); done {
		l.done(cc, keep)
		return
	}
	cc.lc.due = time.Time{}
	// A request body the loop sends itself: one that came whole with its
	// head (a small form or API call); it is not sent again (RFC 9110
	// §9.2.2), so the pooled connection is checked first, as a goroutine
	// checks it.
	body := 0
	if !cc.bodyDone {
		if cl := cc.req.contentLength; !cc.req.chunked && cl > 0 && cl <= int64(len(cc.in.buffered())-n) {
			body = int(cl)
		}
	}
	if (!cc.bodyDone && body == 0) || cc.upgrade || cc.req.expectContinue || queues(cc.poolCfg) {
		l.away(cc, nil)
		return
	}
	srv, err := cc.pool.pick(cc, &cc.choice, &cc.tried)
	if err != nil {
		l.away(cc, nil) // dispatch picks again, and answers (or finds the fallback)
		return
	}
	rs := cc.pool.realOf(srv)
	cc.rs = rs
	var bc *backendConn
	if rs.private() {
		bc = cc.takeOwn(rs, body > 0)
	} else {
		bc = rs.get(body > 0, l)
	}
	if bc == nil || rs.h2 {
		l.away(cc, &resumed{rs: rs, bc: bc})
		return
	}
	if bc.lp != l {
		if bc.lp != nil { // another loop's (with several loops)
			bc.lp.unregisterFrom(bc)
		}
		if !bc.detach() { // TLS
			l.away(cc, &resumed{rs: rs, bc: bc})
			return
		}
		slot, ok := l.register(bc.fd, nil, bc)
		if !ok {
			l.away(cc, &resumed{rs: rs, bc: bc})
			return
		}
		bc.lp, bc.lslot, bc.lgen = l, slot, l.slots[slot].gen
	}
	l.slots[bc.lslot].cc = cc
	cc.backend.Store(bc)
	cc.pool.remember(cc, &cc.choice, rs)
	w := &cc.toSrv
	w.reset(nil, nil)
	w.noWait, w.fd = true, bc.fd
	cc.writeRequestHead(w)
	if body > 0 {
		w.Write(cc.in.buffered()[n : n+body])
	}
	err = w.flush()
	if body > 0 && err == nil { // sent, or queued in w.spill
		cc.consumeHead()
		cc.in.discard(body)
		cc.bytesIn, cc.bodyDone, cc.sentBody = int64(body), true, true
	}
	if err != nil || len(w.spill) > 0 {
		w.noWait = false
		l.slots[bc.lslot].cc = nil
		l.unregister(bc)
		switch {
		case err != nil && body > 0:
			w.spill = nil
			bc.close()
			cc.backend.Store(nil)
			cc.pool.Pool.Release(rs.Server)
			l.done(cc, cc.fail(502, "write to real server failed", err))
		case err != nil:
			w.spill = nil
			bc.close()
			l.away(cc, &resumed{rs: rs}) // the connection was closed: another one
		default:
			l.away(cc, &resumed{rs: rs, bc: bc, sent: true})
		}
		return
	}
	w.noWait = false
	cc.lc.state, cc.lc.bc = lcServer, bc
	cc.lc.due = cc.start.Add(cc.poolCfg.Timeouts.Server)
}

// queues reports whether a request to the pool may have to wait in a
// max_conns queue, which only a goroutine can.
func queues(vs *config.VirtualService) bool {
	for i := range vs.RealServers {
		if vs.RealServers[i].MaxConns > 0 {
			return true
		}
	}
	return false
}

// answer reads the real server's answer and, when it is one the loop can
// pass on whole, relays it.
func (l *evloop) answer(cc *clientConn) {
	bc := cc.lc.bc
	var err error
	for {
		var more bool
		_, more, err = bc.in.fillFD(bc.fd)
		if !more || err != nil {
			break
		}
	}
	b := bc.in.buffered()
	n := headEnd(b)
	if n < 0 {
		switch {
		case err == nil:
			return // more to come
		case len(b) == 0 && err != errFull && !cc.sentBody:
			// A pooled connection the real server had closed: the
			// request was not received; a goroutine sends it again on
			// a fresh one.
			rs := cc.rs
			l.endAttempt(cc, true)
			l.away(cc, &resumed{rs: rs})
			return
		case err == errFull:
			l.endAttempt(cc, false)
			l.done(cc, cc.fail(502, "response head from real server too large", err))
			return
		}
		l.endAttempt(cc, false)
		l.done(cc, cc.fail(502, "real server closed the connection without a response", err))
		return
	}
	resp := &cc.resp
	if perr := resp.parse(b[:n]); perr != nil {
		l.endAttempt(cc, false)
		l.done(cc, cc.fail(502, "invalid response head from real server", perr))
		return
	}
	framing := cc.framingOf()
	switch {
	case resp.status < 200 || cc.cfg.Compress || framing == chunked || framing == untilClose ||
		(framing == sized && resp.contentLength > int64(bufSize-n)):
		// Not one the loop passes on whole: a goroutine relays it (from
		// the head, still in the buffer).
		l.handOff(cc)
		return
	case framing == sized && int64(len(b)-n) < resp.contentLength:
		if err == nil {
			return // the rest of the body is still to come
		}
		l.handOff(cc) // ended early: relayResponse says so
		return
	}
	now := l.now
	_, reuse, keep := cc.answerHead(bc, n, framing)
	if framing == sized {
		cl := int(resp.contentLength)
		cc.out.Write(bc.in.buffered()[:cl])
		bc.in.discard(cl)
		cc.bytesOut = int64(cl)
	}
	werr := cc.out.flush()
	rs := cc.rs
	l.slots[bc.lslot].cc = nil
	cc.lc.bc = nil
	cc.backend.Store(nil)
	cc.pool.Pool.Release(rs.Server)
	switch {
	case !reuse:
		l.unregister(bc)
		bc.close()
	case bc.private:
		cc.keepOwn(bc, now)
	default:
		rs.put(bc, now)
	}
	if werr != nil {
		cc.errMsg, cc.err = "write to client failed", werr
		keep = false
	}
	l.done(cc, keep)
}

// handOff gives the exchange waiting for its answer to a goroutine, which
// relays the answer from its head.
func (l *evloop) handOff(cc *clientConn) {
	bc := cc.lc.bc
	l.slots[bc.lslot].cc = nil
	l.unregister(bc)
	cc.lc.bc = nil
	l.away(cc, &resumed{rs: cc.rs, bc: bc, sent: true})
}

// endAttempt ends the wait for the real server's answer: bc is closed
// (replay: the real server may be tried again, so it is not released).
func (l *evloop) endAttempt(cc *clientConn, replay bool) {
	bc := cc.lc.bc
	l.slots[bc.lslot].cc = nil
	l.unregister(bc)
	bc.close()
	cc.lc.bc = nil
	cc.backend.Store(nil)
	if !replay {
		cc.pool.Pool.Release(cc.rs.Server)
	}
}

// done ends an exchange the loop served: it is logged and counted, and the
// connection waits for the next request or ends.
func (l *evloop) done(cc *clientConn, keep bool) {
	loops.served.Add(1)
	s := cc.svc
	s.logExchange(&cc.record, cc.clientIP)
	s.account(&cc.record)
	keep = keep && !s.isStopping()
	if len(cc.out.spill) > 0 {
		cc.lc.state, cc.lc.keep = lcFlush, keep
		cc.lc.due = l.now.Add(cc.cfg.Timeouts.Client)
		return
	}
	if !keep {
		l.end(cc)
		return
	}
	l.idle(cc)
}

// flush sends more of an answer the client was slow to take.
func (l *evloop) flush(cc *clientConn) {
	all, err := cc.out.sendSpill()
	if err != nil {
		cc.out.spill = nil
		cc.linger = false
		l.end(cc)
		return
	}
	if !all {
		return
	}
	if !cc.lc.keep {
		l.end(cc)
		return
	}
	l.idle(cc)
}
