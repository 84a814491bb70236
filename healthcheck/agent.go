package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/fulcrumlb/fulcrum/config"
)

// The agent check speaks HAProxy's agent-check protocol (HAProxy
// configuration manual, "agent-check"): the checker connects to the agent's
// port, sends nothing, and reads one line of ASCII words separated by
// spaces, tabs or commas, in any order and any case, optionally followed by
// '#' and a free-text reason:
//
//	up 75%
//	drain
//	down #disk full
//	weight:20 maxconn:100
//
// A word that is absent changes nothing: an agent may report only a
// weight, only a state, or both.

// Agent states, the State of an AgentReply.
const (
	AgentUp    = "up"    // the server may be up again, if the active check agrees
	AgentDown  = "down"  // the server is down at once, whatever the active check says
	AgentDrain = "drain" // admin state drain: no new clients
	AgentMaint = "maint" // admin state maintenance: no traffic
	AgentReady = "ready" // admin state ready, ending a drain or maint the agent set
)

// Bounds of the numbers in an agent reply.
const (
	// MaxAgentPercent bounds "NN%": an agent may scale the configured
	// weight from 0 to ten times. (HAProxy bounds the resulting weight
	// instead; the caller bounds it by config.MaxWeight.)
	MaxAgentPercent = 1000
	// MaxAgentWeight bounds "weight:N", as config.MaxWeight bounds the
	// configured one.
	MaxAgentWeight = config.MaxWeight
	// MaxAgentMaxConn bounds "maxconn:N".
	MaxAgentMaxConn = math.MaxInt32
)

// maxAgentLine bounds an agent's reply.
const maxAgentLine = 1 << 10

// AgentReply is what an agent said. Each number is -1 when the agent did not
// give it.
type AgentReply struct {
	// State is "" (not given) or one of AgentUp, AgentDown, AgentDrain,
	// AgentMaint and AgentReady. When a reply holds several state words,
	// the last one wins. HAProxy's "fail" and "stopped", which mark a
	// server down while telling the operator why on its stats page, are
	// read as AgentDown; the reason after '#' is the place for the why.
	State string
	// Percent, from "75%", scales the configured weight: 0 to
	// MaxAgentPercent.
	Percent int
	// Weight, from "weight:N", replaces the configured weight: 0 to
	// MaxAgentWeight.
	Weight int
	// MaxConn, from "maxconn:N", replaces the configured max_conns: 0
	// (unlimited) to MaxAgentMaxConn.
	MaxConn int
	// Reason is the text after the first '#', trimmed; "" if none.
	Reason string
}

// String renders a in the agent protocol, which ParseAgent reads back: "down
// 75% weight:10 maxconn:20 #disk full".
func (a AgentReply) String() string {
	var w []string
	if a.State != "" {
		w = append(w, a.State)
	}
	if a.Percent >= 0 {
		w = append(w, strconv.Itoa(a.Percent)+"%")
	}
	if a.Weight >= 0 {
		w = append(w, "weight:"+strconv.Itoa(a.Weight))
	}
	if a.MaxConn >= 0 {
		w = append(w, "maxconn:"+strconv.Itoa(a.MaxConn))
	}
	if a.Reason != "" {
		w = append(w, "#"+a.Reason)
	}
	return strings.Join(w, " ")
}

// ParseAgent reads one agent reply line (a trailing "\r\n" or "\n" is
// allowed). An empty line is a valid reply that says nothing. A word it does
// not know, or a number that is malformed or out of bounds, is an error that
// names it.
func ParseAgent(line string) (AgentReply, error) {
	a := AgentReply{Percent: -1, Weight: -1, MaxConn: -1}
	if i := strings.IndexByte(line, '#'); i >= 0 {
		a.Reason = strings.TrimSpace(line[i+1:])
		line = line[:i]
	}
	words := strings.FieldsFunc(line, func(r rune) bool {
		return r == ' ' || r == ',' || r == '\t' || r == '\r' || r == '\n'
	})
	for _, w := range words {
		lw := strings.ToLower(w)
		switch lw {
		case AgentUp, AgentDown, AgentDrain, AgentMaint, AgentReady:
			a.State = lw
			continue
		case "fail", "stopped":
			a.State = AgentDown
			continue
		}
		var err error
		switch {
		case strings.HasSuffix(lw, "%"):
			a.Percent, err = agentNumber(w, lw[:len(lw)-1], MaxAgentPercent)
		case strings.HasPrefix(lw, "weight:"):
			a.Weight, err = agentNumber(w, lw[len("weight:"):], MaxAgentWeight)
		case strings.HasPrefix(lw, "maxconn:"):
			a.MaxConn, err = agentNumber(w, lw[len("maxconn:"):], MaxAgentMaxConn)
		default:
			err = fmt.Errorf("agent reply: unknown word %s", quoteWord(w))
		}
		if err != nil {
			return AgentReply{}, err
		}
	}
	return a, nil
}

// agentNumber reads the decimal digits s of word, at most hi.
func agentNumber(word, s string, hi int) (int, error) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("agent reply: %s: want a number from 0 to %d", quoteWord(word), hi)
		}
		n = n*10 + int(s[i]-'0')
		if n > hi {
			return 0, fmt.Errorf("agent reply: %s: out of range 0 to %d", quoteWord(word), hi)
		}
	}
	if s == "" {
		return 0, fmt.Errorf("agent reply: %s: want a number from 0 to %d", quoteWord(word), hi)
	}
	return n, nil
}

// quoteWord quotes a word of a reply for an error, cut short if long.
func quoteWord(w string) string {
	const n = 32
	if len(w) > n {
		return strconv.Quote(w[:n]) + "..."
	}
	return strconv.Quote(w)
}

// QueryAgent connects to the agent at addr, reads its one-line reply (up to
// a newline or the agent closing the connection, at most 1 KiB) and parses
// it. The context's deadline bounds it all.
func QueryAgent(ctx context.Context, addr string) (AgentReply, error) {
	c := startCheck(ctx)
	conn, stop, err := c.dial(addr)
	if err != nil {
		return AgentReply{}, fmt.Errorf("agent %s: %s", addr, c.failErr("connect", "connecting", err).Detail)
	}
	defer stop()
	buf := make([]byte, 0, maxAgentLine)
	for {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[:i]
			break
		}
		if errors.Is(err, io.EOF) {
			if len(buf) == 0 {
				return AgentReply{}, fmt.Errorf("agent %s: closed the connection without a reply", addr)
			}
			break
		}
		if err != nil {
			return AgentReply{}, fmt.Errorf("agent %s: %s", addr, c.failErr("read", "waiting for the reply", err).Detail)
		}
		if len(buf) == cap(buf) {
			return AgentReply{}, fmt.Errorf("agent %s: reply longer than %d bytes without a newline", addr, maxAgentLine)
		}
	}
	a, err := ParseAgent(string(buf))
	if err != nil {
		return AgentReply{}, fmt.Errorf("agent %s: %w", addr, err)
	}
	return a, nil
}
