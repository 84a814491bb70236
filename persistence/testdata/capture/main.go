// Command capture records the first TPKT an RDP client sends, for the
// captured requests in persistence/testdata. It listens on -l, accepts one
// connection, reads until the TPKT length is complete (or 1s passes), writes
// the bytes to -o as a commented hex file and closes, so the client fails
// right after its X.224 Connection Request:
//
//	go run ./persistence/testdata/capture -l 127.0.0.1:33891 -o /tmp/x.hex -c "xfreerdp ... /u:alice" &
//	timeout 10 xvfb-run -a xfreerdp /v:127.0.0.1:33891 /u:alice /cert:ignore
package main

import (
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("l", "127.0.0.1:33891", "listen address")
	out := flag.String("o", "capture.hex", "output file")
	cmd := flag.String("c", "", "client command line, recorded in the file's comment")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	var buf []byte
	tmp := make([]byte, 65536)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil || (len(buf) >= 4 && int(binary.BigEndian.Uint16(buf[2:4])) <= len(buf)) {
			break
		}
	}
	c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "# X.224 Connection Request captured by persistence/testdata/capture on %s:\n", *addr)
	fmt.Fprintf(&b, "#   %s\n# %d bytes, hex:\n", *cmd, len(buf))
	h := hex.EncodeToString(buf)
	for len(h) > 32 {
		b.WriteString(h[:32] + "\n")
		h = h[32:]
	}
	b.WriteString(h + "\n")
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}
