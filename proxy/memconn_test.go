package proxy

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// memConn is a net.Conn that reads from a fixed byte slice and discards
// writes, for driving the readers and copiers in unit tests.
type memConn struct {
	r *bytes.Reader
}

func (c memConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (memConn) Close() error                     { return nil }
func (memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (memConn) SetDeadline(time.Time) error      { return nil }
func (memConn) SetReadDeadline(time.Time) error  { return nil }
func (memConn) SetWriteDeadline(time.Time) error { return nil }

type discardConn struct{ memConn }

func newMemReader(b []byte) *reader {
	return &reader{conn: memConn{r: bytes.NewReader(b)}}
}

func timeoutCtx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

type atomicInt = atomic.Int64
