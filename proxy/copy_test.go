package proxy

import (
	"bytes"
	"net"
	"testing"
)

// captureConn records what is written to it.
type captureConn struct {
	memConn
	out *bytes.Buffer
}

func (c captureConn) Write(p []byte) (int, error) { return c.out.Write(p) }

func TestCopyChunked(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		dechunk bool
		want    string
		wantN   int64
		wantErr error
	}{
		{name: "pass through", in: "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
			want: "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", wantN: 11},
		{name: "trailers kept", in: "3\r\nabc\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n",
			want: "3\r\nabc\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n", wantN: 3},
		{name: "dechunk", in: "5\r\nhello\r\n0\r\nX: 1\r\n\r\n", dechunk: true, want: "hello", wantN: 5},
		{name: "bare lf", in: "2\nhi\n0\n\n", want: "2\nhi\n0\n\n", wantN: 2},
		{name: "bad size", in: "zz\r\nhello\r\n0\r\n\r\n", wantErr: errBadChunk, want: ""},
		{name: "missing crlf after data", in: "2\r\nhiX\r\n0\r\n\r\n", wantErr: errBadChunk, want: "2\r\nhi"},
		{name: "truncated", in: "5\r\nhel", wantErr: errUnexpectedEOFForTest, want: "5\r\nhel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			f := flow{src: newMemReader([]byte(tt.in)), dst: &writer{conn: captureConn{out: &out}}, readTimeout: 1, writeTimeout: 1}
			err := f.copyChunked(tt.dechunk)
			f.dst.flush()
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && tt.wantErr != errUnexpectedEOFForTest && err != tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("wrote %q, want %q", got, tt.want)
			}
			if err == nil && f.n != tt.wantN {
				t.Errorf("counted %d data bytes, want %d", f.n, tt.wantN)
			}
		})
	}
}

var errUnexpectedEOFForTest = &net.OpError{Op: "any"}

func TestCopyN(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // larger than a buffer
	var out bytes.Buffer
	f := flow{src: newMemReader(append(big, "tail"...)), dst: &writer{conn: captureConn{out: &out}}, readTimeout: 1, writeTimeout: 1}
	if err := f.copyN(int64(len(big))); err != nil {
		t.Fatal(err)
	}
	f.dst.flush()
	if !bytes.Equal(out.Bytes(), big) || f.n != int64(len(big)) {
		t.Fatalf("copied %d bytes (counted %d), want %d", out.Len(), f.n, len(big))
	}
	if got := string(f.src.buffered()); got != "tail" && got != "" {
		t.Errorf("left %q buffered", got)
	}
}
