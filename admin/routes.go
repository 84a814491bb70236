package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// securityHeaders go on every response of the admin listener. The UI loads
// nothing from elsewhere and is never framed (clickjacking of its buttons).
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; " +
		"frame-ancestors 'none'; object-src 'none'",
	"X-Frame-Options":              "DENY",
	"X-Content-Type-Options":       "nosniff",
	"Referrer-Policy":              "same-origin",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

// apiFunc is an authenticated API handler. A returned error becomes the
// JSON error response (see errorStatus).
type apiFunc func(w http.ResponseWriter, r *http.Request, p principal) error

// routes builds the admin listener's handler. Each path is registered with
// its methods and, separately, without a method so that other methods get a
// JSON 405 with an Allow header rather than ServeMux's plain-text one.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, methods map[string]http.Handler) {
		allow := make([]string, 0, len(methods))
		for m, h := range methods {
			mux.Handle(m+" "+path, h)
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
		slices.Sort(allow)
		mux.Handle(path, methodNotAllowed(allow))
	}
	get := func(f apiFunc) map[string]http.Handler {
		return map[string]http.Handler{http.MethodGet: s.api(f, false)}
	}
	mutate := func(method string, f apiFunc) map[string]http.Handler {
		return map[string]http.Handler{method: s.api(f, true)}
	}

	const (
		service = "/api/v1/services/{service}"
		server  = service + "/servers/{server}"
	)
	handle("/api/v1/login", map[string]http.Handler{http.MethodPost: http.HandlerFunc(s.handleLogin)})
	handle("/api/v1/logout", map[string]http.Handler{http.MethodPost: http.HandlerFunc(s.handleLogout)})
	handle("/api/v1/session", map[string]http.Handler{http.MethodGet: http.HandlerFunc(s.handleSession)})
	handle("/api/v1/status", get(s.handleStatus))
	handle("/api/v1/events", get(s.handleEvents))
	handle("/api/v1/reload", mutate(http.MethodPost, s.handleReload))
	handle(service, get(s.handleService))
	handle(service+"/servers", mutate(http.MethodPost, s.handleAddServer))
	handle(server, map[string]http.Handler{
		http.MethodGet:    s.api(s.handleServer, false),
		http.MethodDelete: s.api(s.handleRemoveServer, true),
	})
	handle(server+"/state", mutate(http.MethodPut, s.handleSetState))
	handle(server+"/weight", mutate(http.MethodPut, s.handleSetWeight))
	s.syncRoutes(handle)
	s.haRoutes(handle) // ha.go
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: %s", r.URL.Path)
	})

	handle("/metrics", map[string]http.Handler{http.MethodGet: s.metricsHandler()})
	s.uiRoutes(mux, handle)
	return s.common(mux)
}

// common wraps every request: security headers, a bounded body.
func (s *Server) common(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range securityHeaders {
			h.Set(k, v)
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, bodyLimit(r))
		}
		next.ServeHTTP(w, r)
	})
}

// api wraps an API handler: it authenticates the caller and, for mutating
// calls, applies the CSRF defences (see checkOrigin, checkCSRF).
func (s *Server) api(f apiFunc, mutating bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if mutating {
			if err := checkOrigin(r); err != nil {
				s.writeErr(w, r, err)
				return
			}
		}
		p, err := s.authenticate(r)
		if err != nil {
			s.writeErr(w, r, err)
			return
		}
		if mutating {
			if err := checkCSRF(r, p); err != nil {
				s.log.Warn("request refused", zap.String("user", p.user), zap.String("client", clientIP(r)),
					zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
				s.writeErr(w, r, err)
				return
			}
		}
		if err := f(w, r, p); err != nil {
			s.writeErr(w, r, err)
		}
	})
}

// httpError is an error with the status it is answered with.
type httpError struct {
	status int
	msg    string
	header http.Header // added to the response (Retry-After, Allow)
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// problemJSON is one configuration problem of a refused reload.
type problemJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Key     string `json:"key"`
	Message string `json:"message"`
}

// writeErr answers err as JSON {"error": ...} with the status it calls for:
// its own for an httpError, 404 for proxy.ErrNotFound, 400 for
// proxy.ErrInvalid, 422 (with the problems) for config.Errors, else 500.
func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	var ce config.Errors
	switch {
	case errors.As(err, &he):
		for k, vs := range he.header {
			w.Header()[k] = vs
		}
		writeError(w, he.status, "%s", he.msg)
	case errors.Is(err, proxy.ErrNotFound):
		writeError(w, http.StatusNotFound, "%s", err.Error())
	case errors.Is(err, proxy.ErrInvalid):
		writeError(w, http.StatusBadRequest, "%s", err.Error())
	case errors.As(err, &ce):
		problems := make([]problemJSON, len(ce))
		for i, p := range ce {
			problems[i] = problemJSON{File: p.File, Line: p.Line, Key: p.Key, Message: p.Msg}
		}
		noun := "problems"
		if len(ce) == 1 {
			noun = "problem"
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"error":    fmt.Sprintf("configuration has %d %s", len(ce), noun),
			"problems": problems,
		})
	default:
		s.log.Error("admin request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "%s", err.Error())
	}
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"cannot encode the response"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// writeError answers {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// methodNotAllowed answers a known path called with the wrong method.
func methodNotAllowed(allow []string) http.Handler {
	list := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", list)
		writeError(w, http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, list)
	})
}

// isJSON reports whether the request says its body is JSON.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// decodeJSON reads the request body, which must be one JSON object with no
// fields v does not know.
func decodeJSON(r *http.Request, v any) error {
	if !isJSON(r) {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "request body is empty; want a JSON object")
		default:
			return errorf(http.StatusBadRequest, "bad JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "bad JSON: data after the object")
	}
	return nil
}
