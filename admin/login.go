package admin

import (
	"net/http"
	"time"

	"go.uber.org/zap"
)

// loginRequest is the body of POST /api/v1/login.
type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// sessionResponse answers login and GET /api/v1/session.
type sessionResponse struct {
	Authenticated bool   `json:"authenticated"`
	User          string `json:"user,omitempty"`
	// CSRFToken must accompany mutating calls as X-CSRF-Token; empty for
	// HTTP Basic callers, which do not need it.
	CSRFToken string `json:"csrf_token,omitempty"`
	// Expires is when the session ends at the latest (its absolute limit).
	Expires *time.Time `json:"expires,omitempty"`
}

// handleLogin checks a user's password and starts a browser session.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if err := checkOrigin(r); err != nil {
		s.writeErr(w, r, err)
		return
	}
	var req loginRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeErr(w, r, err)
		return
	}
	if req.User == "" || req.Password == "" {
		s.writeErr(w, r, errorf(http.StatusBadRequest, "user and password are required"))
		return
	}
	client := clientIP(r)
	if err := s.auth.checkPassword(client, req.User, req.Password); err != nil {
		s.writeErr(w, r, err)
		return
	}
	token, sess := s.auth.newSession(req.User)
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    token,
		Path:     "/",
		MaxAge:   int(sessionMax / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	s.log.Info("login", zap.String("user", req.User), zap.String("client", client))
	expires := sess.created.Add(sessionMax)
	writeJSON(w, http.StatusOK, sessionResponse{
		Authenticated: true, User: sess.user, CSRFToken: sess.csrf, Expires: &expires,
	})
}

// handleLogout ends the caller's session. A live session must show its
// CSRF token (so another site cannot log the operator out); an expired or
// unknown one is just cleared.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if err := checkOrigin(r); err != nil {
		s.writeErr(w, r, err)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, ok := s.auth.session(c.Value); ok {
			if err := checkCSRF(r, principal{user: sess.user, session: sess}); err != nil {
				s.writeErr(w, r, err)
				return
			}
			s.auth.endSession(c.Value)
			s.log.Info("logout", zap.String("user", sess.user), zap.String("client", clientIP(r)))
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

// handleSession tells the UI whether it is logged in, and its CSRF token.
// It answers 200 either way; only the body differs.
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Header.Get("Authorization") != "" {
		p, err := s.authenticate(r)
		if err != nil {
			s.writeErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, sessionResponse{Authenticated: true, User: p.user})
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, ok := s.auth.session(c.Value); ok {
			expires := sess.created.Add(sessionMax)
			writeJSON(w, http.StatusOK, sessionResponse{
				Authenticated: true, User: sess.user, CSRFToken: sess.csrf, Expires: &expires,
			})
			return
		}
	}
	writeJSON(w, http.StatusOK, sessionResponse{Authenticated: false})
}
