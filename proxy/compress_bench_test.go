package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
)

// BenchmarkCompress measures a keep-alive request for a 4 KiB text
// response: compress off, on for a client that accepts gzip, and on for
// one that does not (the decision's cost alone). The client reads each
// response with net/http (the same work in every case) and does not
// decompress; body-bytes/op is the body as it crossed the wire.
func BenchmarkCompress(b *testing.B) {
	body := textBody(4096)
	resp := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	for _, bc := range []struct {
		name     string
		compress bool
		accept   string
	}{
		{"off", false, "gzip, deflate, br"},
		{"on", true, "gzip, deflate, br"},
		{"on-not-accepted", true, "identity"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := startTestServiceWith(b, config.ModeHTTP, func(vs *config.VirtualService) { vs.Compress = bc.compress },
				rawBackend(b, resp))
			c, err := net.Dial("tcp", p.Services()[0].Addrs()[0].String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /index.html HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\nAccept-Encoding: " + bc.accept + "\r\n\r\n")
			br := bufio.NewReaderSize(c, 64<<10)
			var wire int64
			exchange := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					b.Fatal(err)
				}
				wire = n
				if got := r.Header.Get("Content-Encoding") == "gzip"; got != (bc.compress && bc.accept != "identity") {
					b.Fatalf("Content-Encoding %q", r.Header.Get("Content-Encoding"))
				}
			}
			for range 100 {
				exchange()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				exchange()
			}
			b.ReportMetric(float64(wire), "body-bytes/op")
		})
	}
}
