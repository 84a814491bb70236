package healthcheck

import (
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// reply builds an AgentReply; absent numbers are -1.
func reply(state string, percent, weight, maxConn int, reason string) AgentReply {
	return AgentReply{State: state, Percent: percent, Weight: weight, MaxConn: maxConn, Reason: reason}
}

func TestParseAgent(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    AgentReply
		wantErr string
	}{
		{name: "empty", line: "", want: reply("", -1, -1, -1, "")},
		{name: "blank line", line: " \t\r\n", want: reply("", -1, -1, -1, "")},
		{name: "up", line: "up", want: reply("up", -1, -1, -1, "")},
		{name: "down", line: "down\n", want: reply("down", -1, -1, -1, "")},
		{name: "drain", line: "drain\r\n", want: reply("drain", -1, -1, -1, "")},
		{name: "maint", line: "maint", want: reply("maint", -1, -1, -1, "")},
		{name: "ready", line: "ready", want: reply("ready", -1, -1, -1, "")},
		{name: "fail is down", line: "fail", want: reply("down", -1, -1, -1, "")},
		{name: "stopped is down", line: "stopped #shutting down", want: reply("down", -1, -1, -1, "shutting down")},
		{name: "any case", line: "UP Weight:5 MAXCONN:7", want: reply("up", -1, 5, 7, "")},
		{name: "percent", line: "75%", want: reply("", 75, -1, -1, "")},
		{name: "zero percent", line: "0%", want: reply("", 0, -1, -1, "")},
		{name: "max percent", line: "1000%", want: reply("", 1000, -1, -1, "")},
		{name: "leading zeros", line: "007%", want: reply("", 7, -1, -1, "")},
		{name: "weight", line: "weight:20", want: reply("", -1, 20, -1, "")},
		{name: "max weight", line: "weight:65535", want: reply("", -1, 65535, -1, "")},
		{name: "maxconn", line: "maxconn:30", want: reply("", -1, -1, 30, "")},
		{name: "maxconn unlimited", line: "maxconn:0", want: reply("", -1, -1, 0, "")},
		{name: "everything", line: "up 50% weight:3 maxconn:100 #all fine", want: reply("up", 50, 3, 100, "all fine")},
		{name: "commas and tabs", line: "75%,maxconn:30,\tmaint,down\n", want: reply("down", 75, -1, 30, "")},
		{name: "last state wins", line: "down drain up", want: reply("up", -1, -1, -1, "")},
		{name: "last number wins", line: "10% 20%", want: reply("", 20, -1, -1, "")},
		{name: "reason without space", line: "down#disk full", want: reply("down", -1, -1, -1, "disk full")},
		{name: "reason trimmed, # kept", line: "down  #  disk #2 full  \r\n", want: reply("down", -1, -1, -1, "disk #2 full")},
		{name: "reason only", line: "# nothing to say", want: reply("", -1, -1, -1, "nothing to say")},
		{name: "words after # are reason", line: "up #down 0%", want: reply("up", -1, -1, -1, "down 0%")},

		{name: "unknown word", line: "up sideways", wantErr: `agent reply: unknown word "sideways"`},
		{name: "unknown long word", line: strings.Repeat("a", 40), wantErr: `agent reply: unknown word "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"...`},
		{name: "bare number", line: "75", wantErr: `agent reply: unknown word "75"`},
		{name: "percent alone", line: "%", wantErr: `agent reply: "%": want a number from 0 to 1000`},
		{name: "negative percent", line: "-5%", wantErr: `agent reply: "-5%": want a number from 0 to 1000`},
		{name: "signed percent", line: "+5%", wantErr: `agent reply: "+5%": want a number from 0 to 1000`},
		{name: "fractional percent", line: "7.5%", wantErr: `agent reply: "7.5%": want a number from 0 to 1000`},
		{name: "percent too big", line: "1001%", wantErr: `agent reply: "1001%": out of range 0 to 1000`},
		{name: "huge percent", line: "99999999999999999999999%", wantErr: `agent reply: "99999999999999999999999%": out of range 0 to 1000`},
		{name: "weight empty", line: "weight:", wantErr: `agent reply: "weight:": want a number from 0 to 65535`},
		{name: "weight too big", line: "weight:65536", wantErr: `agent reply: "weight:65536": out of range 0 to 65535`},
		{name: "weight with space", line: "weight: 5", wantErr: `agent reply: "weight:": want a number`},
		{name: "maxconn negative", line: "maxconn:-1", wantErr: `agent reply: "maxconn:-1": want a number from 0 to 2147483647`},
		{name: "maxconn too big", line: "MaxConn:2147483648", wantErr: `agent reply: "MaxConn:2147483648": out of range 0 to 2147483647`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAgent(tt.line)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAgent(%q) = %+v, %v; want error %q", tt.line, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAgent(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
			}
		})
	}
}

func TestAgentReplyString(t *testing.T) {
	tests := []struct {
		a    AgentReply
		want string
	}{
		{reply("", -1, -1, -1, ""), ""},
		{reply("down", -1, -1, -1, "disk full"), "down #disk full"},
		{reply("up", 75, 3, 0, ""), "up 75% weight:3 maxconn:0"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.a.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseAgent(f *testing.F) {
	for _, s := range []string{
		"", "up", "down #disk full", "75%,maxconn:30,maint,down\n", "weight:65535 ready",
		"stopped", "FAIL #x", "1000%", "%", "maxconn:2147483647", "#", "up\r\n", "\t,\t", "wEiGhT:0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		a, err := ParseAgent(line)
		if err != nil {
			if a != (AgentReply{}) {
				t.Errorf("ParseAgent(%q) = %+v with error %v", line, a, err)
			}
			return
		}
		switch a.State {
		case "", AgentUp, AgentDown, AgentDrain, AgentMaint, AgentReady:
		default:
			t.Errorf("ParseAgent(%q).State = %q", line, a.State)
		}
		for _, n := range []struct {
			name   string
			v, max int
		}{{"Percent", a.Percent, MaxAgentPercent}, {"Weight", a.Weight, MaxAgentWeight}, {"MaxConn", a.MaxConn, MaxAgentMaxConn}} {
			if n.v < -1 || n.v > n.max {
				t.Errorf("ParseAgent(%q).%s = %d, want -1 to %d", line, n.name, n.v, n.max)
			}
		}
		if a.Reason != strings.TrimSpace(a.Reason) {
			t.Errorf("ParseAgent(%q).Reason = %q, not trimmed", line, a.Reason)
		}
		if a.Reason != "" && !strings.Contains(line, "#") {
			t.Errorf("ParseAgent(%q).Reason = %q without a '#'", line, a.Reason)
		}
		// String renders what ParseAgent reads back.
		b, err := ParseAgent(a.String())
		if err != nil || b != a {
			t.Errorf("ParseAgent(%q) = %+v, but ParseAgent(%q) = %+v, %v", line, a, a.String(), b, err)
		}
		if utf8.ValidString(line) && !utf8.ValidString(a.Reason) {
			t.Errorf("ParseAgent(%q).Reason = %q, invalid UTF-8", line, a.Reason)
		}
	})
}

func TestQueryAgent(t *testing.T) {
	says := func(s string) func(net.Conn) {
		return func(c net.Conn) { c.Write([]byte(s)) }
	}
	tests := []struct {
		name    string
		agent   func(net.Conn)
		want    AgentReply
		wantErr string // after "agent ADDR: "
	}{
		{name: "line", agent: says("up 75%\n"), want: reply("up", 75, -1, -1, "")},
		{name: "CRLF", agent: says("drain weight:0\r\n"), want: reply("drain", -1, 0, -1, "")},
		{name: "only the first line", agent: says("down #a\nup\n"), want: reply("down", -1, -1, -1, "a")},
		{name: "no newline, then close", agent: says("maint #upgrade"), want: reply("maint", -1, -1, -1, "upgrade")},
		{name: "in pieces", agent: func(c net.Conn) {
			for _, s := range []string{"do", "wn", " #disk", " full\n"} {
				c.Write([]byte(s))
			}
		}, want: reply("down", -1, -1, -1, "disk full")},
		{name: "empty line", agent: says("\n"), want: reply("", -1, -1, -1, "")},
		{name: "1 KiB line", agent: says("#" + strings.Repeat("x", 1022) + "\n"), want: reply("", -1, -1, -1, strings.Repeat("x", 1022))},
		{name: "closed at once", agent: says(""), wantErr: "closed the connection without a reply"},
		{name: "too long", agent: says("#" + strings.Repeat("x", 1024) + "\n"), wantErr: "reply longer than 1024 bytes without a newline"},
		{name: "bad word", agent: says("up sideways\n"), wantErr: `agent reply: unknown word "sideways"`},
		{name: "silent", agent: hold, wantErr: "timeout after 100ms waiting for the reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serve(t, tt.agent)
			got, err := QueryAgent(timeoutCtx(t, 100*time.Millisecond), addr)
			if tt.wantErr != "" {
				if want := "agent " + addr + ": " + tt.wantErr; err == nil || err.Error() != want {
					t.Fatalf("QueryAgent = %+v, %v; want error %q", got, err, want)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("QueryAgent = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		addr := refusedAddr(t)
		_, err := QueryAgent(timeoutCtx(t, time.Second), addr)
		if want := "agent " + addr + ": connect: connection refused"; err == nil || err.Error() != want {
			t.Errorf("QueryAgent: %v, want %q", err, want)
		}
	})
}
