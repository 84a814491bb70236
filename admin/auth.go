package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/fulcrumlb/fulcrum/config"
)

// Sessions of the web UI.
const (
	sessionCookie = "fulcrum_session"
	// sessionIdle ends a session unused for this long.
	sessionIdle = 30 * time.Minute
	// sessionMax ends any session this long after login.
	sessionMax = 12 * time.Hour
	// maxSessions bounds the session table; the least recently used goes.
	maxSessions = 1000
	// csrfHeader carries a session's CSRF token on mutating calls.
	csrfHeader = "X-CSRF-Token"
)

// Login throttle: after throttleFree failures from one client, each further
// attempt must wait twice as long as the one before (1s, 2s, 4s, ... up to
// throttleMaxDelay), answered 429 with Retry-After meanwhile. A client's
// record is forgotten throttleWindow after its last failure, or on success.
const (
	throttleFree       = 5
	throttleWindow     = 15 * time.Minute
	throttleMaxDelay   = 15 * time.Minute
	throttleMaxClients = 10000
)

// maxVerifying bounds concurrent bcrypt comparisons, each tens of
// milliseconds of CPU, so a burst of logins cannot starve the proxy.
const maxVerifying = 4

// principal is an authenticated caller.
type principal struct {
	user string
	// session is the caller's session; nil for HTTP Basic auth.
	session *session
}

// session is one logged-in browser.
type session struct {
	user string
	hash string // the user's password hash at login; a change ends the session
	csrf string
	// created and lastSeen bound the session's life (sessionMax, sessionIdle).
	created, lastSeen time.Time
}

// authenticator holds the users, the sessions and the login throttle.
type authenticator struct {
	log *zap.Logger
	now func() time.Time
	// verifying bounds concurrent bcrypt comparisons.
	verifying chan struct{}

	mu    sync.Mutex
	users map[string]string // name → bcrypt hash
	// dummy is compared against when the user is unknown, so that an
	// unknown user costs as much time as a wrong password.
	dummy     []byte
	dummyCost int
	// sessions are keyed by the SHA-256 of their token, so the table holds
	// nothing a cookie could be made from.
	sessions map[[sha256.Size]byte]*session
	failures map[string]*failures // client key → recent failed logins
}

// failures counts a client's recent failed logins.
type failures struct {
	n    int
	last time.Time
}

func newAuthenticator(log *zap.Logger, now func() time.Time) *authenticator {
	return &authenticator{
		log:       log,
		now:       now,
		verifying: make(chan struct{}, maxVerifying),
		users:     map[string]string{},
		sessions:  map[[sha256.Size]byte]*session{},
		failures:  map[string]*failures{},
	}
}

// checkUser reports a user the admin listener cannot use.
func checkUser(u *config.AdminUser) error {
	if u == nil || u.Name == "" {
		return errors.New("user without a name")
	}
	if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
		return fmt.Errorf("user %q: password_hash is not a bcrypt hash: %w", u.Name, err)
	}
	return nil
}

// setUsers replaces the users and ends the sessions of users removed or
// whose hash changed; it returns how many sessions ended.
func (a *authenticator) setUsers(list []*config.AdminUser) int {
	users := make(map[string]string, len(list))
	cost := 0
	for _, u := range list {
		if err := checkUser(u); err != nil {
			a.log.Error("admin user ignored", zap.Error(err))
			continue
		}
		users[u.Name] = u.PasswordHash
		c, _ := bcrypt.Cost([]byte(u.PasswordHash))
		cost = max(cost, c)
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	a.mu.Lock()
	needDummy := a.dummy == nil || a.dummyCost != cost
	a.mu.Unlock()
	var dummy []byte
	if needDummy {
		// The dummy's cost follows the users' so that both take as long.
		var err error
		dummy, err = bcrypt.GenerateFromPassword([]byte(randomToken()), cost)
		if err != nil {
			panic(fmt.Sprintf("admin: bcrypt of a random password failed: %v", err)) // only for cost out of range, checked above
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.users = users
	if dummy != nil {
		a.dummy, a.dummyCost = dummy, cost
	}
	ended := 0
	for k, s := range a.sessions {
		if users[s.user] != s.hash {
			delete(a.sessions, k)
			ended++
		}
	}
	return ended
}

// verify checks a user's password. An unknown user is compared against the
// dummy hash, so both failures take about as long.
func (a *authenticator) verify(name, password string) bool {
	a.mu.Lock()
	hash, known := a.users[name]
	dummy := a.dummy
	a.mu.Unlock()
	a.verifying <- struct{}{}
	defer func() { <-a.verifying }()
	if !known {
		bcrypt.CompareHashAndPassword(dummy, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// errBadCredentials is the one answer to a wrong user or password, so the
// response does not tell which.
var errBadCredentials = errorf(http.StatusUnauthorized, "invalid user or password")

// checkPassword verifies a login (session or Basic) from client, applying
// the throttle: a throttled client is refused before any comparison.
func (a *authenticator) checkPassword(client, name, password string) error {
	key := throttleKey(client)
	if wait := a.throttled(key); wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		return &httpError{
			status: http.StatusTooManyRequests,
			msg:    fmt.Sprintf("too many failed logins; retry in %ds", secs),
			header: http.Header{"Retry-After": {strconv.Itoa(secs)}},
		}
	}
	if !a.verify(name, password) {
		a.fail(key)
		a.log.Warn("login failed", zap.String("user", name), zap.String("client", client))
		return errBadCredentials
	}
	a.mu.Lock()
	delete(a.failures, key)
	a.mu.Unlock()
	return nil
}

// throttled returns how long the client must still wait before its next
// attempt (zero: it may try now).
func (a *authenticator) throttled(key string) time.Duration {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failures[key]
	if f == nil {
		return 0
	}
	if now.Sub(f.last) > throttleWindow {
		delete(a.failures, key)
		return 0
	}
	if f.n < throttleFree {
		return 0
	}
	delay := throttleMaxDelay
	if shift := f.n - throttleFree; shift < 20 {
		delay = min(time.Second<<shift, throttleMaxDelay)
	}
	return max(f.last.Add(delay).Sub(now), 0)
}

// fail records a failed login of the client.
func (a *authenticator) fail(key string) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failures[key]
	if f == nil {
		if len(a.failures) >= throttleMaxClients {
			a.pruneFailures(now)
		}
		f = &failures{}
		a.failures[key] = f
	}
	f.n++
	f.last = now
}

// pruneFailures forgets clients whose window has passed and, if the table
// is still full, the one that failed longest ago.
func (a *authenticator) pruneFailures(now time.Time) {
	var oldest string
	for k, f := range a.failures {
		if now.Sub(f.last) > throttleWindow {
			delete(a.failures, k)
		} else if oldest == "" || f.last.Before(a.failures[oldest].last) {
			oldest = k
		}
	}
	if len(a.failures) >= throttleMaxClients {
		delete(a.failures, oldest)
	}
}

// throttleKey is the unit the throttle counts: the client's IP, or its /64
// for IPv6, where one host commonly holds a whole /64.
func throttleKey(client string) string {
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return client
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// clientIP is the peer's address. Headers like X-Forwarded-For are not
// trusted: the admin listener is meant to be reached directly.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// randomToken is 256 random bits, base64url without padding.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand aborts the program instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newSession logs user in and returns the session's cookie value.
func (a *authenticator) newSession(user string) (token string, s session) {
	now := a.now()
	token = randomToken()
	a.mu.Lock()
	defer a.mu.Unlock()
	s = session{user: user, hash: a.users[user], csrf: randomToken(), created: now, lastSeen: now}
	if len(a.sessions) >= maxSessions {
		a.pruneSessions(now)
	}
	a.sessions[sha256.Sum256([]byte(token))] = &s
	return token, s
}

// pruneSessions drops expired sessions and, if the table is still full,
// the least recently used one.
func (a *authenticator) pruneSessions(now time.Time) {
	var lru [sha256.Size]byte
	var lruSeen time.Time
	for k, s := range a.sessions {
		if s.expired(now) {
			delete(a.sessions, k)
		} else if lruSeen.IsZero() || s.lastSeen.Before(lruSeen) {
			lru, lruSeen = k, s.lastSeen
		}
	}
	if len(a.sessions) >= maxSessions {
		delete(a.sessions, lru)
	}
}

func (s *session) expired(now time.Time) bool {
	return now.Sub(s.created) >= sessionMax || now.Sub(s.lastSeen) >= sessionIdle
}

// session returns the live session of a cookie value and marks it used.
func (a *authenticator) session(token string) (*session, bool) {
	now := a.now()
	k := sha256.Sum256([]byte(token))
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[k]
	if s == nil {
		return nil, false
	}
	if s.expired(now) || a.users[s.user] != s.hash {
		delete(a.sessions, k)
		return nil, false
	}
	s.lastSeen = now
	c := *s
	return &c, true
}

// endSession logs a cookie value out.
func (a *authenticator) endSession(token string) {
	a.mu.Lock()
	delete(a.sessions, sha256.Sum256([]byte(token)))
	a.mu.Unlock()
}

// authenticate identifies the caller: HTTP Basic credentials when sent,
// else the session cookie. It never asks the browser for Basic credentials
// (no WWW-Authenticate), so a browser never caches them.
func (s *Server) authenticate(r *http.Request) (principal, error) {
	if user, password, ok := r.BasicAuth(); ok {
		if err := s.auth.checkPassword(clientIP(r), user, password); err != nil {
			return principal{}, err
		}
		return principal{user: user}, nil
	}
	if r.Header.Get("Authorization") != "" {
		return principal{}, errorf(http.StatusUnauthorized, "unsupported Authorization scheme; use Basic or log in")
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, ok := s.auth.session(c.Value); ok {
			return principal{user: sess.user, session: sess}, nil
		}
		return principal{}, errorf(http.StatusUnauthorized, "session expired; log in again")
	}
	return principal{}, errorf(http.StatusUnauthorized, "authentication required")
}

// checkOrigin refuses a cross-origin mutating request: when the browser
// names the page's origin (Origin, RFC 6454 §7) it must be this host, and
// a request the browser labels cross-site (Sec-Fetch-Site) is refused.
func checkOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, r.Host) {
			return errorf(http.StatusForbidden, "cross-origin request refused: Origin %q does not match %s://%s", o, scheme, r.Host)
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return errorf(http.StatusForbidden, "cross-site request refused")
	}
	return nil
}

// checkCSRF applies the CSRF defence of an authenticated mutating call. A
// session (cookie, which the browser adds on its own) must show its CSRF
// token in X-CSRF-Token. Basic auth must come with Content-Type
// application/json, which a cross-site form cannot send without a CORS
// preflight this server never grants.
func checkCSRF(r *http.Request, p principal) error {
	if p.session != nil {
		got := r.Header.Get(csrfHeader)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.session.csrf)) != 1 {
			return errorf(http.StatusForbidden, "missing or wrong %s header", csrfHeader)
		}
		return nil
	}
	if !isJSON(r) {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	return nil
}
