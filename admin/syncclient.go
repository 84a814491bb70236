package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/proxy"
)

// This file is the sending side of HA sync: the Master pushes its
// configuration and streams its new stick-table entries to the peer's
// admin API (sync.go is the receiving side).

// Batching and retries of the Pusher.
const (
	// StickBatchInterval and StickBatchMax: the stream sends what it has
	// every 100ms, or at once when 256 entries are waiting.
	StickBatchInterval = 100 * time.Millisecond
	StickBatchMax      = 256
	// stickBatchBytes bounds a request's entries (well below
	// maxSyncStickBytes), whatever the keys' length.
	stickBatchBytes = 512 << 10

	// A config push is retried after 250ms, doubling up to 30s.
	pushRetryMin = 250 * time.Millisecond
	pushRetryMax = 30 * time.Second
	// requestTimeout bounds one request to the peer; the peer's reload
	// runs inside a config push.
	requestTimeout = 30 * time.Second
)

// PusherConfig says how to reach the HA peer's admin API.
type PusherConfig struct {
	// Peer is the peer's admin address, "host:port" (http, or https when
	// TLS), or a URL "https://host:port". Required.
	Peer string
	// User and Password are an admin user of the peer (an [[admin.user]]
	// of its file whose password_hash is of Password). Required.
	User, Password string
	// TLS makes the pusher speak HTTPS to a Peer given as host:port.
	TLS bool
	// RootCAs verify the peer's admin certificate; nil: the system roots.
	RootCAs *x509.CertPool
	// Log gets the outcome of pushes; nil logs nothing.
	Log *zap.Logger
	// Transport, if not nil, replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// Pusher sends this node's configuration and stick-table entries to its HA
// peer's admin API. It logs in once (POST /api/v1/login) and reuses the
// session, so the peer checks the password (bcrypt) once, not per batch; a
// 401 logs in again. Its methods are safe for concurrent use.
type Pusher struct {
	base   string // "http://host:port"
	user   string
	pass   string
	client *http.Client
	log    *zap.Logger

	mu   sync.Mutex // guards csrf; one login at a time
	csrf string     // the session's CSRF token; "" before login

	pending chan []byte // QueueConfig's latest file, for Run

	sent, failed atomic.Uint64
	failing      atomic.Bool // the last stick batch failed (log once per outage)
}

// PusherStats counts stick entries.
type PusherStats struct {
	// Sent were accepted by the peer (applied or skipped there).
	Sent uint64
	// Failed were in batches the peer could not be sent or refused.
	Failed uint64
}

// NewPusher checks c and returns a Pusher; it contacts nobody yet.
func NewPusher(c PusherConfig) (*Pusher, error) {
	if c.Peer == "" {
		return nil, errors.New("sync: no peer address")
	}
	if c.User == "" || c.Password == "" {
		return nil, errors.New("sync: the peer's admin user and password are required")
	}
	base := c.Peer
	switch {
	case strings.HasPrefix(base, "https://"), strings.HasPrefix(base, "http://"):
	case c.TLS:
		base = "https://" + base
	default:
		base = "http://" + base
	}
	base = strings.TrimRight(base, "/")
	tr := c.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.RootCAs}
		tr = t
	}
	jar, _ := cookiejar.New(nil) // never fails without options
	log := c.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Pusher{base: base, user: c.User, pass: c.Password, log: log, pending: make(chan []byte, 1),
		client: &http.Client{Transport: tr, Jar: jar, Timeout: requestTimeout}}, nil
}

// Stats returns the stick entries sent and failed so far.
func (p *Pusher) Stats() PusherStats {
	return PusherStats{Sent: p.sent.Load(), Failed: p.failed.Load()}
}

// PeerError is the peer's refusal of a request.
type PeerError struct {
	Status int
	// Msg is the peer's error message; Problems its configuration problems
	// (422), each as FILE:LINE: KEY: MSG.
	Msg      string
	Problems []string
}

func (e *PeerError) Error() string {
	s := fmt.Sprintf("peer answered %d: %s", e.Status, e.Msg)
	if len(e.Problems) > 0 {
		s += ": " + strings.Join(e.Problems, "; ")
	}
	return s
}

// permanent reports whether retrying cannot help: the peer refuses the
// content (422, 400, 413), is Master (409), or has no sync (404). 401 and
// 403 count too: the credentials are wrong until an operator fixes them,
// and retrying would only feed the peer's login throttle.
func permanent(err error) bool {
	var pe *PeerError
	return errors.As(err, &pe) && pe.Status >= 400 && pe.Status < 500 && pe.Status != http.StatusTooManyRequests &&
		pe.Status != http.StatusRequestTimeout
}

// PushConfig sends a configuration file to the peer, which keeps its own
// [ha] and [admin], reloads and answers. Failures to reach the peer are
// retried with backoff (250ms doubling to 30s) until ctx ends; the peer's
// refusal (bad config: *PeerError 422; peer is Master: 409) is returned at
// once.
func (p *Pusher) PushConfig(ctx context.Context, file []byte) error {
	body, _ := json.Marshal(syncConfigRequest{Config: string(file)}) // a string always encodes
	delay := pushRetryMin
	for attempt := 1; ; attempt++ {
		var resp struct {
			Status string `json:"status"`
		}
		err := p.call(ctx, http.MethodPut, "/api/v1/sync/config", body, &resp)
		if err == nil {
			p.log.Info("sync: configuration pushed to the peer", zap.String("peer", p.base), zap.String("result", resp.Status),
				zap.Int("attempt", attempt))
			return nil
		}
		if permanent(err) {
			p.log.Error("sync: the peer refused the configuration", zap.String("peer", p.base), zap.Error(err))
			return err
		}
		p.log.Warn("sync: configuration push failed; retrying", zap.String("peer", p.base), zap.Int("attempt", attempt),
			zap.Duration("retry_in", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("sync: push configuration: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, pushRetryMax)
	}
}

// QueueConfig hands a configuration file to Run to push, replacing one not
// yet pushed: the latest file wins. It never blocks.
func (p *Pusher) QueueConfig(file []byte) {
	for {
		select {
		case p.pending <- file:
			return
		default:
		}
		select {
		case <-p.pending: // drop the older file
		default:
		}
	}
}

// PushStick sends stick-table entries to the peer, in requests of at most
// StickBatchMax entries, once each. It returns how many entries the peer
// applied.
func (p *Pusher) PushStick(ctx context.Context, batch []proxy.StickUpdate) (int, error) {
	now := time.Now()
	applied := 0
	var firstErr error
	for len(batch) > 0 {
		req := syncStickRequest{Entries: make([]stickEntryJSON, 0, min(len(batch), StickBatchMax))}
		size := 0
		n := 0
		for n < len(batch) && n < StickBatchMax && (n == 0 || size < stickBatchBytes) {
			u := &batch[n]
			req.Entries = append(req.Entries, stickEntryJSON{Service: u.Service, Method: u.Method, Key: u.Key, Server: u.Server,
				IdleMS: max(now.Sub(u.Used).Milliseconds(), 0)})
			size += len(u.Service) + len(u.Method) + 2*len(u.Key) + len(u.Server) + 80 // JSON may escape the key
			n++
		}
		batch = batch[n:]
		body, err := json.Marshal(req)
		if err == nil {
			var resp syncStickResponse
			if err = p.call(ctx, http.MethodPost, "/api/v1/sync/stick", body, &resp); err == nil {
				applied += resp.Applied
				p.sent.Add(uint64(n))
				continue
			}
		}
		p.failed.Add(uint64(n))
		if firstErr == nil {
			firstErr = err
		}
	}
	return applied, firstErr
}

// ResyncStick sends a full snapshot (proxy.Proxy.StickSnapshot) to the peer,
// as when this node becomes Master or the peer comes back.
func (p *Pusher) ResyncStick(ctx context.Context, snapshot []proxy.StickUpdate) error {
	applied, err := p.PushStick(ctx, snapshot)
	p.log.Info("sync: stick tables sent to the peer", zap.String("peer", p.base), zap.Int("entries", len(snapshot)),
		zap.Int("applied", applied), zap.Error(err))
	return err
}

// Run pushes until ctx ends: the configurations given to QueueConfig
// (retried with backoff; a newer one replaces one being retried), and the
// stick-table updates of feed (proxy.Proxy.StickUpdates; nil for none), in
// batches every StickBatchInterval or of StickBatchMax entries. A batch the
// peer cannot take is dropped (counted in Stats, logged once per outage):
// the entries are soft state, and the next resync or new entry restores
// them. Run it while this node is Master.
func (p *Pusher) Run(ctx context.Context, feed <-chan proxy.StickUpdate) {
	var wg sync.WaitGroup
	wg.Go(func() { p.runConfig(ctx) })
	if feed != nil {
		wg.Go(func() { p.runStick(ctx, feed) })
	}
	wg.Wait()
}

func (p *Pusher) runConfig(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case file := <-p.pending:
			// A newer file cancels the push of this one.
			pctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				p.PushConfig(pctx, file)
			}()
			select {
			case <-done:
			case <-ctx.Done():
			case newer := <-p.pending:
				p.QueueConfig(newer) // back in the slot, taken on the next turn
			}
			cancel()
			<-done
		}
	}
}

func (p *Pusher) runStick(ctx context.Context, feed <-chan proxy.StickUpdate) {
	tick := time.NewTicker(StickBatchInterval)
	defer tick.Stop()
	batch := make([]proxy.StickUpdate, 0, StickBatchMax)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		applied, err := p.PushStick(ctx, batch)
		if err == nil {
			p.log.Debug("sync: stick entries sent", zap.String("peer", p.base), zap.Int("entries", len(batch)), zap.Int("applied", applied))
		}
		switch {
		case err != nil && len(batch) < StickBatchMax:
			// Kept for the next tick: the peer may be starting (its
			// admin server comes up after this node became Master).
			// Once a whole batch is waiting, it is dropped instead.
			return
		case err != nil && !p.failing.Swap(true):
			p.log.Warn("sync: stick entries not sent to the peer; dropping them until it answers", zap.String("peer", p.base),
				zap.Int("entries", len(batch)), zap.Error(err))
		case err == nil && p.failing.Swap(false):
			p.log.Info("sync: stick entries reach the peer again", zap.String("peer", p.base))
		}
		clear(batch) // let the strings go
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-feed:
			batch = append(batch, u)
			if len(batch) >= StickBatchMax {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// call sends one JSON request to the peer as the logged-in user, logging
// in first (and again after a 401), and decodes a 2xx answer into out.
func (p *Pusher) call(ctx context.Context, method, path string, body []byte, out any) error {
	for try := 0; ; try++ {
		csrf, err := p.session(ctx, try > 0)
		if err != nil {
			return err
		}
		err = p.do(ctx, method, path, body, csrf, out)
		var pe *PeerError
		if try == 0 && errors.As(err, &pe) && pe.Status == http.StatusUnauthorized {
			continue // the session ended (peer restarted, idle timeout): log in again
		}
		return err
	}
}

// session returns the CSRF token of a live session, logging in if there is
// none or fresh is set.
func (p *Pusher) session(ctx context.Context, fresh bool) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.csrf != "" && !fresh {
		return p.csrf, nil
	}
	body, _ := json.Marshal(loginRequest{User: p.user, Password: p.pass})
	var resp sessionResponse
	if err := p.do(ctx, http.MethodPost, "/api/v1/login", body, "", &resp); err != nil {
		p.csrf = ""
		return "", fmt.Errorf("log in to the peer as %q: %w", p.user, err)
	}
	p.csrf = resp.CSRFToken
	return p.csrf, nil
}

// do sends one request and decodes the answer.
func (p *Pusher) do(ctx context.Context, method, path string, body []byte, csrf string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set(csrfHeader, csrf)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("sync: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("sync: %s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error    string        `json:"error"`
			Problems []problemJSON `json:"problems"`
		}
		pe := &PeerError{Status: resp.StatusCode, Msg: strings.TrimSpace(string(data))}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			pe.Msg = e.Error
			for _, pr := range e.Problems {
				pe.Problems = append(pe.Problems, fmt.Sprintf("%s:%d: %s: %s", pr.File, max(pr.Line, 1), pr.Key, pr.Message))
			}
		}
		return fmt.Errorf("sync: %s %s: %w", method, path, pe)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("sync: %s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}
