package admin

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fulcrumlb/fulcrum/ha"
)

// HARuntime is implemented by a Runtime that runs an [ha] section. It is
// separate from Runtime, which stays as it was: the HA endpoints answer
// 404 when the Runtime does not implement it or has no [ha].
//
//	GET  /api/v1/ha            the group's state per family
//	POST /api/v1/ha/takeover   become Master now and stay (priority 254)
//	POST /api/v1/ha/release    hand over to the peer and stay Backup
//	POST /api/v1/ha/auto       drop takeover/release: the configured priority
type HARuntime interface {
	// HAStatus reports the group's state; ok is false without [ha].
	HAStatus() (st ha.Status, ok bool)
	// HAOverride applies "takeover", "release" or "auto".
	HAOverride(action string) error
}

// haRoutes registers the HA endpoints.
func (s *Server) haRoutes(handle func(string, map[string]http.Handler)) {
	handle("/api/v1/ha", map[string]http.Handler{http.MethodGet: s.api(s.handleHA, false)})
	for _, action := range []string{"takeover", "release", "auto"} {
		handle("/api/v1/ha/"+action, map[string]http.Handler{http.MethodPost: s.api(func(w http.ResponseWriter, r *http.Request, p principal) error {
			return s.handleHAOverride(w, r, p, action)
		}, true)})
	}
}

// haRuntime returns the HARuntime, or an error to answer.
func (s *Server) haRuntime() (HARuntime, error) {
	if h, ok := s.rt.(HARuntime); ok {
		if _, on := h.HAStatus(); on {
			return h, nil
		}
	}
	return nil, errorf(http.StatusNotFound, "high availability is off: the configuration has no [ha] section")
}

func (s *Server) handleHA(w http.ResponseWriter, _ *http.Request, _ principal) error {
	h, err := s.haRuntime()
	if err != nil {
		return err
	}
	st, _ := h.HAStatus()
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleHAOverride(w http.ResponseWriter, r *http.Request, p principal, action string) error {
	h, err := s.haRuntime()
	if err != nil {
		return err
	}
	err = h.HAOverride(action)
	s.audit(r, p, "ha "+action, "", err)
	if err != nil {
		return errorf(http.StatusConflict, "%v", err)
	}
	st, _ := h.HAStatus()
	writeJSON(w, http.StatusOK, st)
	return nil
}

// HA metrics: exported at scrape time from HAStatus, like the others.
var (
	descHAState = prometheus.NewDesc("fulcrum_ha_state",
		"VRRP state of the family's virtual router: 0 initialize, 1 backup, 2 master, 3 fault.", []string{"family"}, nil)
	descHAPriority = prometheus.NewDesc("fulcrum_ha_priority",
		"VRRP priority in use (takeover, release and tracking change it).", []string{"family"}, nil)
)

// haStateValues are the values of fulcrum_ha_state.
var haStateValues = map[string]float64{"initialize": 0, "backup": 1, "master": 2, "fault": 3}

// haCollector exports the HA series; nothing without [ha].
type haCollector struct{ rt Runtime }

var _ prometheus.Collector = haCollector{}

func (c haCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHAState
	ch <- descHAPriority
}

func (c haCollector) Collect(ch chan<- prometheus.Metric) {
	h, ok := c.rt.(HARuntime)
	if !ok {
		return
	}
	st, on := h.HAStatus()
	if !on {
		return
	}
	for _, f := range st.Families {
		ch <- prometheus.MustNewConstMetric(descHAState, prometheus.GaugeValue, haStateValues[f.State], f.Family)
		ch <- prometheus.MustNewConstMetric(descHAPriority, prometheus.GaugeValue, float64(f.Priority), f.Family)
	}
}
