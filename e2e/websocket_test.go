package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// wsFrame is one WebSocket message with its type, so that the echo server
// answers text with text and binary with binary.
type wsFrame struct {
	data        []byte
	payloadType byte
}

var wsFrames = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		f := v.(wsFrame)
		return f.data, f.payloadType, nil
	},
	Unmarshal: func(data []byte, payloadType byte, v any) error {
		*v.(*wsFrame) = wsFrame{append([]byte(nil), data...), payloadType}
		return nil
	},
}

// TestWebSocket runs the python websockets client through the proxy to a
// golang.org/x/net/websocket echo server that greets first: the upgrade is
// relayed and messages flow both ways (RFC 6455).
func TestWebSocket(t *testing.T) {
	python := python3WithWebsockets(t)
	echo := websocket.Server{ // no Handshake: no Origin check
		Handler: func(ws *websocket.Conn) {
			defer ws.Close() // answers the client's close frame
			ws.MaxPayloadBytes = 1 << 20
			if err := wsFrames.Send(ws, wsFrame{[]byte("hello from the real server"), websocket.TextFrame}); err != nil {
				return
			}
			for {
				var f wsFrame
				if err := wsFrames.Receive(ws, &f); err != nil {
					return
				}
				if f.payloadType == websocket.TextFrame {
					f.data = append([]byte("echo: "), f.data...)
				}
				if err := wsFrames.Send(ws, f); err != nil {
					return
				}
			}
		},
	}
	b := newHTTPBackend(t, "ws", echo)
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/ws_client.py", "ws://"+vip+"/ws")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("python websocket client: %v\n%s%s", err, out, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	want := map[string]any{
		"greeting":      "hello from the real server",
		"texts":         []any{"echo: ping 0", "echo: ping 1", "echo: ping 2"},
		"binary_type":   "bytes",
		"binary_len":    float64(256 * 1024),
		"binary_equal":  true,
		"binary_sha256": got["binary_sha256"], // shown on failure only
		"close_code":    float64(1000),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("client got\n%v\nwant\n%v", got, want)
	}

	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	logs := f.accessLogs()
	if len(logs) != 1 || logs[0].num("status") != 101 {
		t.Errorf("access log %v, want one line with status 101", logs)
	}
}
