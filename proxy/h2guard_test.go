package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestAppendSettingsOnce(t *testing.T) {
	type kv struct {
		id  http2.SettingID
		val uint32
	}
	frame := func(settings ...kv) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		ss := make([]http2.Setting, len(settings))
		for i, s := range settings {
			ss[i] = http2.Setting{ID: s.id, Val: s.val}
		}
		fr.WriteSettings(ss...)
		return b.Bytes()
	}
	win, push, size := http2.SettingInitialWindowSize, http2.SettingEnablePush, http2.SettingMaxFrameSize
	for _, tt := range []struct {
		name     string
		in, want []byte
	}{
		{"empty", frame(), frame()},
		{"no duplicates", frame(kv{win, 100}, kv{push, 0}), frame(kv{win, 100}, kv{push, 0})},
		{"the last value holds", frame(kv{win, 100}, kv{win, 1}), frame(kv{win, 1})},
		{"first position, last value", frame(kv{win, 100}, kv{push, 0}, kv{win, 1}, kv{size, 20000}, kv{push, 1}),
			frame(kv{win, 1}, kv{push, 1}, kv{size, 20000})},
		// x/net answers FRAME_SIZE_ERROR: passed as it is.
		{"bad length", []byte{0, 0, 13, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 9},
			[]byte{0, 0, 13, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 9}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := appendSettingsOnce(nil, tt.in); !bytes.Equal(got, tt.want) {
				t.Errorf("got  %x\nwant %x", got, tt.want)
			}
		})
	}
}

// h2client writes a client's side of a connection into a pipe whose other
// end a guard reads.
type h2client struct {
	fr  *http2.Framer
	buf bytes.Buffer
}

func newH2Client() *h2client {
	c := &h2client{}
	c.buf.WriteString(http2.ClientPreface)
	c.fr = http2.NewFramer(&c.buf, nil)
	return c
}

// block encodes a header block with an encoder of its own.
func block(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// guardRead feeds the client's bytes through a guard, in pieces of size
// step, and returns the frames x/net would read, summed up, and the error
// that ended them.
func guardRead(t *testing.T, client []byte, step int) ([]string, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		for len(client) > 0 {
			n := min(step, len(client))
			if _, err := b.Write(client[:n]); err != nil {
				return
			}
			client = client[n:]
		}
		b.Close()
	}()
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	g := newH2Guard(a)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(g, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Fatalf("preface %q, %v", preface, err)
	}
	fr := http2.NewFramer(nil, g)
	fr.SetMaxReadFrameSize(h2MaxFrameSize) // as the server advertises
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var frames []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return frames, err
		}
		var s string
		switch f := f.(type) {
		case *http2.SettingsFrame:
			v, _ := f.Value(http2.SettingInitialWindowSize)
			s = fmt.Sprintf("SETTINGS %d window=%d", f.NumSettings(), v)
		case *http2.MetaHeadersFrame:
			s = fmt.Sprintf("HEADERS %s %d", f.PseudoValue("path"), len(f.RegularFields()))
		default:
			s = fmt.Sprintf("%s %d", f.Header().Type, f.Header().Length)
		}
		frames = append(frames, s)
	}
}

func TestH2GuardPassesAndStops(t *testing.T) {
	request := []string{":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/"}
	for _, step := range []int{1, 7, 4096} {
		c := newH2Client()
		c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		// A valid request, with padding and priority, its block split
		// over a CONTINUATION.
		blk := block(append(request, "te", "trailers", "x-long", string(bytes.Repeat([]byte("v"), 300)))...)
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:10], EndStream: false,
			PadLength: 3, Priority: http2.PriorityParam{Weight: 15}})
		c.fr.WriteContinuation(1, true, blk[10:])
		c.fr.WriteData(1, true, bytes.Repeat([]byte("d"), 10000)) // passes unexamined
		c.fr.WritePing(false, [8]byte{1})
		// A malformed one: the connection ends before x/net sees it.
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(append(request, "connection", "close")...),
			EndStream: true, EndHeaders: true})
		c.fr.WritePing(false, [8]byte{2})

		frames, err := guardRead(t, c.buf.Bytes(), step)
		// One SETTINGS value, the last; the request whole; the DATA
		// frame's 10000 bytes; the PING; then the end.
		want := []string{"SETTINGS 1 window=1", "HEADERS / 2", "DATA 10000", "PING 8"}
		if !slices.Equal(frames, want) || !errors.Is(err, errH2Malformed) {
			t.Errorf("step %d: frames %q, %v; want %q, then %v", step, frames, err, want, errH2Malformed)
		}
	}
}

func TestH2GuardMalformed(t *testing.T) {
	request := []string{":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/"}
	for _, tt := range []struct {
		name  string
		extra []string
		bad   bool
	}{
		{"plain", nil, false},
		{"te trailers", []string{"te", "trailers"}, false},
		{"connection", []string{"connection", "keep-alive"}, true},
		{"keep-alive", []string{"keep-alive", "5"}, true},
		{"proxy-connection", []string{"proxy-connection", "close"}, true},
		{"transfer-encoding", []string{"transfer-encoding", "chunked"}, true},
		{"upgrade", []string{"upgrade", "websocket"}, true},
		{"te gzip", []string{"te", "gzip"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newH2Client()
			// One encoder for every block: its dynamic table carries over.
			var b bytes.Buffer
			he := hpack.NewEncoder(&b)
			enc := func(fields []string) []byte {
				b.Reset()
				for i := 0; i < len(fields); i += 2 {
					he.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
				}
				return append([]byte(nil), b.Bytes()...)
			}
			c.fr.WriteSettings()
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(request, "x-a", "1")), EndStream: true, EndHeaders: true})
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(append(request, tt.extra...)), EndStream: true, EndHeaders: true})
			// The dynamic table entries of the earlier blocks are used
			// here: the guard's decoder must have kept in step.
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: enc(append(request, "x-a", "1")), EndStream: true, EndHeaders: true})
			frames, err := guardRead(t, c.buf.Bytes(), 4096)
			switch {
			case tt.bad && (len(frames) != 2 || !errors.Is(err, errH2Malformed)):
				t.Errorf("%d frames, %v; want SETTINGS, the first request, then %v", len(frames), err, errH2Malformed)
			case !tt.bad && (len(frames) != 4 || err != io.EOF):
				t.Errorf("%d frames, %v; want all 4, then EOF", len(frames), err)
			}
		})
	}
}
