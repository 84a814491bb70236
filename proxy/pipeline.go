package proxy

import (
	"errors"
	"io"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/balancer"
)

// The request pipeline every HTTP front end shares. A front end reads the
// request off its wire protocol (HTTP/1.1: clientConn; HTTP/2 and HTTP/3:
// h2exchange) and writes the answer back; the decisions in between are made
// here and in persist.go, the same way for each: persistence and the
// scheduler pick the real server (dispatch, through requestView), connect
// failures are retried on another one, and the outcome is counted and logged
// once (account, logExchange, from a record).

// Access-log values of "proto".
const (
	protoHTTP10 = "HTTP/1.0"
	protoHTTP11 = "HTTP/1.1"
	protoHTTP2  = "HTTP/2.0"
	protoHTTP3  = "HTTP/3.0"
)

// record is what one exchange leaves for the counters, passive health
// observation and its log line, whichever front end carried it.
type record struct {
	start      time.Time
	proto      string // protoHTTP10, protoHTTP11, protoHTTP2 or protoHTTP3
	logMethod  []byte
	logTarget  []byte
	rs         *realServer // the real server of the last attempt, if any
	status     int         // the status sent to the client; 0 if none
	generated  bool        // the proxy answered (fail), not the real server
	connFailed bool        // the last attempt could not connect (observed already)
	bytesIn    int64       // request body bytes from the client
	bytesOut   int64       // response body bytes to the client
	errMsg     string      // why the exchange failed, if it did
	err        error
	routeName  string   // the route that matched: its name ("#N" unnamed), or "" for none
	pool       *Service // the pool dispatched to (the listening service for its own); nil if none
}

// dispatch runs the attempts of one request: it picks a real server
// (persistence first, then the scheduler) and hands it to try, which
// returns an error only when it could not connect, so that nothing was sent
// and another real server may be tried, up to retries more times. When the
// scheduler finds no real server to try, the service's fallback, if it has
// one, gets the request (fallback.go). The
// connect failures are counted and observed here. dispatch returns the
// failure the front end must answer when no attempt reached a real server
// (status 0 when one did: try has answered the client).
//
// first, if not nil, is a real server an event loop picked (and acquired)
// already: the first attempt goes there.
func (s *Service) dispatch(rv requestView, ch *choice, tried *balancer.Tried, rec *record, retries int,
	first *realServer, try func(rs *realServer) error) (status int, reason string, err error) {
	var connErr error
	for attempt := 0; ; attempt++ {
		var srv *balancer.Server
		var err error
		if first != nil {
			srv, first = first.Server, nil
		} else {
			srv, err = s.pick(rv, ch, tried)
		}
		if err == balancer.ErrNoServer {
			// No real server can take the request (none is available,
			// or those that are failed to connect): the fallback's
			// turn, if there is one. Not on a queue timeout: busy
			// servers are not unavailable.
			if fb := s.fallback.Load(); fb != nil {
				fbErr := s.toFallback(fb, rec, try)
				if fbErr == nil {
					return 0, "", nil
				}
				if connErr == nil {
					return 503, "no real server available, and the fallback could not be reached", fbErr
				}
				return 502, "no real server could be reached, nor the fallback", fbErr
			}
		}
		if err != nil {
			if connErr != nil {
				return 502, "no real server could be reached", connErr
			}
			if err == balancer.ErrQueueTimeout {
				return 503, "queue timeout: every real server is at max_conns", err
			}
			return 503, "no real server available", err
		}
		rs := s.realOf(srv)
		if attempt > 0 {
			rs.retries.Add(1)
		}
		rec.rs = rs
		err = try(rs)
		if err == nil {
			return 0, "", nil
		}
		connErr = err
		rec.connFailed = true
		rs.connectErrors.Add(1)
		rs.observe(true, "connect: "+err.Error())
		// Debug only: the exchange's own line reports the final failure.
		s.log.Debug("connect to real server failed",
			zap.String("real_server", srv.Name), zap.String("address", srv.Address), zap.Error(err))
		tried.Add(srv)
		if attempt >= retries {
			return 502, "connect to real server failed", err
		}
	}
}

// account counts the exchange for the status API and metrics, and feeds
// passive health observation.
func (s *Service) account(rec *record) {
	if rec.status == 0 && rec.errMsg == "" {
		return // no request came: the connection just ended
	}
	s.requests.Add(1)
	if rec.errMsg != "" {
		s.failed.Add(1)
	}
	if p := rec.pool; p != nil && p != s {
		// A pool counts the requests routes sent it (it receives none of
		// its own).
		p.requests.Add(1)
		if rec.errMsg != "" {
			p.failed.Add(1)
		}
	}
	rs := rec.rs
	if rs == nil {
		return
	}
	rs.requests.Add(1)
	rs.bytesOut.Add(uint64(rec.bytesIn))
	rs.bytesIn.Add(uint64(rec.bytesOut))
	switch {
	case !rec.generated && rec.status > 0:
		rs.countResponse(rec.status)
		if rec.status >= 500 {
			rs.observe(true, "status "+strconv.Itoa(rec.status))
		} else {
			rs.observe(false, "")
		}
	case rec.generated && rec.status >= 502 && !rec.connFailed:
		// 502 or 504 for this real server's answer (its connect
		// failures were observed as they happened).
		rs.observe(true, rec.errMsg)
	}
}

// logExchange writes the exchange's one log line: an access-log line, or a
// warning for a failure when the access log is off. client is the client's
// IP.
func (s *Service) logExchange(rec *record, client string) {
	access := s.access.Load()
	if (access == nil && rec.errMsg == "") || (rec.status == 0 && rec.errMsg == "") {
		return // nothing to say, or no request came (the client just left)
	}
	if access == nil && rec.generated && policyAnswer(rec.status) {
		// The configuration's answer, not a failure: a flood of denied or
		// limited clients must not flood the log (the counters show it).
		return
	}
	rsName, route, pool := "-", "-", "-"
	if rec.rs != nil {
		rsName = rec.rs.Name
	}
	if rec.routeName != "" {
		route = rec.routeName
	}
	if rec.pool != nil {
		pool = rec.pool.Name
	}
	fields := [13]zap.Field{
		zap.String("client", client),
		zap.String("route", route),
		zap.String("pool", pool),
		zap.String("real_server", rsName),
		zap.ByteString("method", rec.logMethod),
		zap.ByteString("target", rec.logTarget),
		zap.String("proto", rec.proto),
		zap.Int("status", rec.status),
		zap.Int64("bytes_in", rec.bytesIn),
		zap.Int64("bytes_out", rec.bytesOut),
		zap.Duration("duration", time.Since(rec.start)),
	}
	nf := 11
	if rec.errMsg != "" {
		fields[nf] = zap.String("error", rec.errMsg)
		nf++
		if rec.err != nil && !errors.Is(rec.err, io.EOF) {
			fields[nf] = zap.NamedError("cause", rec.err)
			nf++
		}
	}
	if access != nil {
		access.Info("request", fields[:nf]...)
	} else {
		s.log.Warn("request failed", fields[:nf]...)
	}
}

// policyAnswer reports whether a status the proxy generated carries out the
// configuration (allow/deny, rate_limit, routes) rather than reports a
// failure.
func policyAnswer(status int) bool {
	return status == 403 || status == 404 || status == 429
}
