package admin

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// statusResponse is GET /api/v1/status: the proxy's snapshot plus the
// request and error rates of the last few seconds.
type statusResponse struct {
	Time       time.Time             `json:"time"`
	Services   []serviceJSON         `json:"services"`
	EventLoops proxy.EventLoopStatus `json:"event_loops"`
}

// serviceJSON is one virtual service with its rates. Its RealServers
// shadows the embedded field of the same JSON name.
type serviceJSON struct {
	proxy.ServiceStatus
	// RequestRate and ErrorRate are per second over the last rateWindow;
	// errors are the requests the proxy itself failed.
	RequestRate float64          `json:"request_rate"`
	ErrorRate   float64          `json:"error_rate"`
	RealServers []realServerJSON `json:"real_servers"`
}

// realServerJSON is one real server with its rates.
type realServerJSON struct {
	proxy.RealServerStatus
	// RequestRate and ErrorRate are per second over the last rateWindow;
	// errors are 5xx responses and failed connects.
	RequestRate float64 `json:"request_rate"`
	ErrorRate   float64 `json:"error_rate"`
}

// eventsResponse is GET /api/v1/events.
type eventsResponse struct {
	// Events are oldest first.
	Events []proxy.Event `json:"events"`
	// LastID is the ID of the newest event returned, or the after
	// parameter if there is none: pass it as after to poll for more.
	LastID uint64 `json:"last_id"`
}

// states maps the accepted spellings of an admin state.
var states = map[string]string{
	config.StateReady:       config.StateReady,
	config.StateDrain:       config.StateDrain,
	config.StateMaintenance: config.StateMaintenance,
	"maint":                 config.StateMaintenance, // as agents and HAProxy spell it
}

func parseState(s string) (string, error) {
	if st, ok := states[strings.ToLower(strings.TrimSpace(s))]; ok {
		return st, nil
	}
	return "", errorf(http.StatusBadRequest, "unknown state %q; want ready, drain or maintenance", s)
}

func checkWeight(w *int) error {
	switch {
	case w == nil:
		return errorf(http.StatusBadRequest, "weight is required")
	case *w < 0 || *w > config.MaxWeight:
		return errorf(http.StatusBadRequest, "weight %d out of range 0..%d", *w, config.MaxWeight)
	}
	return nil
}

func (s *Server) status() statusResponse {
	st := s.rt.Status()
	rates := s.rates.rates()
	out := statusResponse{Time: s.now(), Services: make([]serviceJSON, len(st.Services)), EventLoops: st.EventLoops}
	for i, vs := range st.Services {
		out.Services[i] = s.serviceJSON(vs, rates)
	}
	return out
}

func (s *Server) serviceJSON(vs proxy.ServiceStatus, rates rateSet) serviceJSON {
	r := rates.services[vs.Name]
	out := serviceJSON{ServiceStatus: vs, RequestRate: r.requests, ErrorRate: r.errors,
		RealServers: make([]realServerJSON, len(vs.RealServers))}
	out.ServiceStatus.RealServers = nil
	for i, rs := range vs.RealServers {
		out.RealServers[i] = realServerRates(vs.Name, rs, rates)
	}
	return out
}

func realServerRates(service string, rs proxy.RealServerStatus, rates rateSet) realServerJSON {
	r := rates.servers[serverKey{service, rs.Name}]
	return realServerJSON{RealServerStatus: rs, RequestRate: r.requests, ErrorRate: r.errors}
}

// lookup finds a virtual service, and a real server of it when server is
// not empty, in a fresh status.
func (s *Server) lookup(service, server string) (serviceJSON, realServerJSON, error) {
	st := s.status()
	for _, vs := range st.Services {
		if vs.Name != service {
			continue
		}
		if server == "" {
			return vs, realServerJSON{}, nil
		}
		for _, rs := range vs.RealServers {
			if rs.Name == server {
				return vs, rs, nil
			}
		}
		return vs, realServerJSON{}, errorf(http.StatusNotFound, "real server %q not found in virtual service %q", server, service)
	}
	return serviceJSON{}, realServerJSON{}, errorf(http.StatusNotFound, "virtual service %q not found", service)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, _ principal) error {
	writeJSON(w, http.StatusOK, s.status())
	return nil
}

func (s *Server) handleService(w http.ResponseWriter, r *http.Request, _ principal) error {
	vs, _, err := s.lookup(r.PathValue("service"), "")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, vs)
	return nil
}

func (s *Server) handleServer(w http.ResponseWriter, r *http.Request, _ principal) error {
	_, rs, err := s.lookup(r.PathValue("service"), r.PathValue("server"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rs)
	return nil
}

// answerServer answers a change to a real server with its new status.
func (s *Server) answerServer(w http.ResponseWriter, status int, service, server string) {
	if _, rs, err := s.lookup(service, server); err == nil {
		writeJSON(w, status, rs)
		return
	}
	writeJSON(w, status, map[string]string{"service": service, "real_server": server})
}

func (s *Server) handleSetState(w http.ResponseWriter, r *http.Request, p principal) error {
	var req struct {
		State string `json:"state"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	state, err := parseState(req.State)
	if err != nil {
		return err
	}
	service, server := r.PathValue("service"), r.PathValue("server")
	err = s.rt.SetState(service, server, state)
	s.audit(r, p, "set_state", service+"/"+server, err, zap.String("state", state))
	if err != nil {
		return err
	}
	s.answerServer(w, http.StatusOK, service, server)
	return nil
}

func (s *Server) handleSetWeight(w http.ResponseWriter, r *http.Request, p principal) error {
	var req struct {
		Weight *int `json:"weight"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkWeight(req.Weight); err != nil {
		return err
	}
	service, server := r.PathValue("service"), r.PathValue("server")
	err := s.rt.SetWeight(service, server, *req.Weight)
	s.audit(r, p, "set_weight", service+"/"+server, err, zap.Int("weight", *req.Weight))
	if err != nil {
		return err
	}
	s.answerServer(w, http.StatusOK, service, server)
	return nil
}

// addServerRequest is the body of POST .../servers; it mirrors a
// [[virtual_service.real_server]] table.
type addServerRequest struct {
	// Name defaults to Address.
	Name    string `json:"name"`
	Address string `json:"address"`
	// Weight defaults to 1.
	Weight   *int `json:"weight"`
	MaxConns int  `json:"max_conns"`
	// State defaults to ready.
	State string `json:"state"`
}

func (req *addServerRequest) realServer() (*config.RealServer, error) {
	rs := &config.RealServer{Name: req.Name, Address: req.Address, Weight: 1, MaxConns: req.MaxConns,
		State: config.StateReady}
	if rs.Address == "" {
		return nil, errorf(http.StatusBadRequest, "address is required")
	}
	if _, port, err := net.SplitHostPort(rs.Address); err != nil || port == "" {
		return nil, errorf(http.StatusBadRequest, "address %q: want IP:port", rs.Address)
	}
	if rs.Name == "" {
		rs.Name = rs.Address
	}
	if strings.ContainsAny(rs.Name, "/?#") {
		return nil, errorf(http.StatusBadRequest, "name %q: must not contain '/', '?' or '#'", rs.Name)
	}
	if req.Weight != nil {
		if err := checkWeight(req.Weight); err != nil {
			return nil, err
		}
		rs.Weight = *req.Weight
	}
	if rs.MaxConns < 0 {
		return nil, errorf(http.StatusBadRequest, "max_conns %d: must be ≥ 0 (0 is unlimited)", rs.MaxConns)
	}
	if req.State != "" {
		st, err := parseState(req.State)
		if err != nil {
			return nil, err
		}
		rs.State = st
	}
	return rs, nil
}

func (s *Server) handleAddServer(w http.ResponseWriter, r *http.Request, p principal) error {
	var req addServerRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	rs, err := req.realServer()
	if err != nil {
		return err
	}
	service := r.PathValue("service")
	// Answer a name already in use with 409 here; the runtime only knows
	// ErrInvalid, which says 400.
	vs, _, err := s.lookup(service, "")
	if err != nil {
		return err
	}
	for _, x := range vs.RealServers {
		if x.Name == rs.Name {
			return errorf(http.StatusConflict, "real server %q already exists in virtual service %q", rs.Name, service)
		}
	}
	err = s.rt.AddRealServer(service, rs)
	s.audit(r, p, "add_real_server", service+"/"+rs.Name, err, zap.String("address", rs.Address),
		zap.Int("weight", rs.Weight), zap.Int("max_conns", rs.MaxConns), zap.String("state", rs.State))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/services/"+url.PathEscape(service)+"/servers/"+url.PathEscape(rs.Name))
	s.answerServer(w, http.StatusCreated, service, rs.Name)
	return nil
}

func (s *Server) handleRemoveServer(w http.ResponseWriter, r *http.Request, p principal) error {
	service, server := r.PathValue("service"), r.PathValue("server")
	err := s.rt.RemoveRealServer(service, server)
	s.audit(r, p, "remove_real_server", service+"/"+server, err)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request, p principal) error {
	err := s.rt.Reload()
	s.audit(r, p, "reload", "", err)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	return nil
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, _ principal) error {
	var after uint64
	if a := r.URL.Query().Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "after=%q: want an event ID (a non-negative integer)", a)
		}
		after = n
	}
	out := eventsResponse{Events: s.rt.Events(after), LastID: after}
	if out.Events == nil {
		out.Events = []proxy.Event{}
	}
	if n := len(out.Events); n > 0 {
		out.LastID = out.Events[n-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// audit logs a mutating action: who, what, on what, and how it ended.
func (s *Server) audit(r *http.Request, p principal, action, target string, err error, fields ...zap.Field) {
	via := "basic"
	if p.session != nil {
		via = "session"
	}
	fields = append(fields, zap.String("user", p.user), zap.String("via", via), zap.String("client", clientIP(r)),
		zap.String("action", action))
	if target != "" {
		fields = append(fields, zap.String("target", target))
	}
	if err != nil {
		s.log.Warn("admin action failed", append(fields, zap.Error(err))...)
		return
	}
	s.log.Info("admin action", fields...)
}
