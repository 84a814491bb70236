package proxy

import (
	"errors"
	"net"
	"os"
	"strconv"
)

// The proxy's own responses. Every failure goes through its front end's
// fail (clientConn.fail, h2exchange.fail), which picks one of these, so
// that each failure answers once with a short body and is logged once.
var statusText = map[int]string{
	400: "Bad Request",
	403: "Forbidden", // allow, deny (route.go)
	404: "Not Found", // no route matched, and the service has no real servers of its own (route.go)
	408: "Request Timeout",
	429: "Too Many Requests", // rate_limit (ratelimit.go), which adds Retry-After
	431: "Request Header Fields Too Large",
	501: "Not Implemented",
	502: "Bad Gateway",
	503: "Service Unavailable",
	504: "Gateway Timeout",
}

// canned holds the pre-rendered responses, [status][keep-alive];
// cannedBodies their bodies, which the HTTP/2 front end sends.
var (
	canned       = map[int][2][]byte{}
	cannedBodies = map[int]string{}
)

func init() {
	for code, text := range statusText {
		body := strconv.Itoa(code) + " " + text + "\n"
		cannedBodies[code] = body
		head := "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
			"Cache-Control: no-cache\r\n"
		canned[code] = [2][]byte{
			[]byte(head + "Connection: close\r\n\r\n" + body),
			[]byte(head + "\r\n" + body),
		}
	}
}

func cannedResponse(code int, keep bool) []byte {
	r := canned[code]
	if keep {
		return r[1]
	}
	return r[0]
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
