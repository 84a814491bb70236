package admin

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// Metric descriptions. Every series of a virtual service has the label
// service; every series of a real server also has real_server.
var (
	svcLabels = []string{"service"}
	rsLabels  = []string{"service", "real_server"}

	descServiceRequests = prometheus.NewDesc("fulcrum_service_requests_total",
		"HTTP requests (tcp mode: connections) received by the virtual service.", svcLabels, nil)
	descServiceErrors = prometheus.NewDesc("fulcrum_service_errors_total",
		"Requests the proxy itself failed (errors it generated) for the virtual service.", svcLabels, nil)
	descServiceActive = prometheus.NewDesc("fulcrum_service_active_connections",
		"Client connections open now.", svcLabels, nil)
	descServiceQueue = prometheus.NewDesc("fulcrum_service_queue_length",
		"Requests waiting for a real server slot.", svcLabels, nil)
	descServiceColor = prometheus.NewDesc("fulcrum_service_color",
		"The virtual service's summary color: 1 for the current one (green: all up, yellow: some down, "+
			"red: none available, blue: a real server deliberately offline).", []string{"service", "color"}, nil)
	descServiceFallbackActive = prometheus.NewDesc("fulcrum_service_fallback_active",
		"1 while the virtual service's fallback server answers (no real server available), else 0; "+
			"only for services with a fallback.", svcLabels, nil)
	descServiceFallbackRequests = prometheus.NewDesc("fulcrum_service_fallback_requests_total",
		"Requests sent to the virtual service's fallback server; only for services with a fallback.", svcLabels, nil)
	descServiceRateLimited = prometheus.NewDesc("fulcrum_service_rate_limited_total",
		"Requests answered 429 by the virtual service's rate_limit (also counted in errors).", svcLabels, nil)

	descRSRequests = prometheus.NewDesc("fulcrum_real_server_requests_total",
		"Requests (tcp mode: connections) sent to the real server.", rsLabels, nil)
	descRSResponses = prometheus.NewDesc("fulcrum_real_server_responses_total",
		"Responses from the real server by status class.", append(rsLabels[:2:2], "class"), nil)
	descRSBytesIn = prometheus.NewDesc("fulcrum_real_server_received_bytes_total",
		"Bytes received from the real server.", rsLabels, nil)
	descRSBytesOut = prometheus.NewDesc("fulcrum_real_server_sent_bytes_total",
		"Bytes sent to the real server.", rsLabels, nil)
	descRSActive = prometheus.NewDesc("fulcrum_real_server_active_connections",
		"Requests (tcp mode: connections) in flight to the real server.", rsLabels, nil)
	descRSMaxConns = prometheus.NewDesc("fulcrum_real_server_max_connections",
		"The real server's max_conns (0: unlimited).", rsLabels, nil)
	descRSUp = prometheus.NewDesc("fulcrum_real_server_up",
		"Health of the real server: 1 up, 0 down.", rsLabels, nil)
	descRSState = prometheus.NewDesc("fulcrum_real_server_admin_state",
		"Admin state of the real server: 1 for the current one of ready, drain, maintenance.",
		append(rsLabels[:2:2], "state"), nil)
	descRSWeight = prometheus.NewDesc("fulcrum_real_server_weight",
		"Configured weight of the real server.", rsLabels, nil)
	descRSEffWeight = prometheus.NewDesc("fulcrum_real_server_effective_weight",
		"Weight the scheduler uses after agent percentage and slow start.", rsLabels, nil)
	descRSCheckLatency = prometheus.NewDesc("fulcrum_real_server_check_latency_seconds",
		"Duration of the last health check.", rsLabels, nil)
	descRSCheckOK = prometheus.NewDesc("fulcrum_real_server_check_success",
		"Result of the last health check: 1 passed, 0 failed.", rsLabels, nil)
	descRSCheckTime = prometheus.NewDesc("fulcrum_real_server_check_timestamp_seconds",
		"Unix time of the last health check.", rsLabels, nil)
	descRSRetries = prometheus.NewDesc("fulcrum_real_server_retries_total",
		"Failed connects to the real server that were retried on another.", rsLabels, nil)
	descRSConnectErrors = prometheus.NewDesc("fulcrum_real_server_connect_errors_total",
		"Failed connects to the real server.", rsLabels, nil)
	// The kernel's counters of an L4 real server (modes dr, nat, tun) only.
	descRSInactive = prometheus.NewDesc("fulcrum_real_server_inactive_connections",
		"IPVS connections to the real server that are not established (TCP closing or in TIME_WAIT, UDP); L4 services only.", rsLabels, nil)
	descRSPacketsIn = prometheus.NewDesc("fulcrum_real_server_received_packets_total",
		"Packets from the real server that IPVS forwarded (0 with dr and tun: replies bypass the director); L4 services only.", rsLabels, nil)
	descRSPacketsOut = prometheus.NewDesc("fulcrum_real_server_sent_packets_total",
		"Packets IPVS forwarded to the real server; L4 services only.", rsLabels, nil)

	descEventLoops = prometheus.NewDesc("fulcrum_event_loops",
		"Event loops serving plain HTTP/1.1 clients (global.event_loops) started so far.", nil, nil)
	descLoopExchanges = prometheus.NewDesc("fulcrum_event_loop_exchanges_total",
		`HTTP/1.1 exchanges the event loops took: path="loop" served whole in a loop, path="goroutine" `+
			"handed to a goroutine (a request body still on its way, a dial, a large or chunked answer, ...).", []string{"path"}, nil)

	allDescs = []*prometheus.Desc{
		descServiceRequests, descServiceErrors, descServiceActive, descServiceQueue, descServiceColor,
		descServiceFallbackActive, descServiceFallbackRequests, descServiceRateLimited,
		descRSRequests, descRSResponses, descRSBytesIn, descRSBytesOut, descRSActive, descRSMaxConns,
		descRSUp, descRSState, descRSWeight, descRSEffWeight, descRSCheckLatency, descRSCheckOK,
		descRSCheckTime, descRSRetries, descRSConnectErrors, descRSInactive, descRSPacketsIn, descRSPacketsOut,
		descEventLoops, descLoopExchanges,
	}
	colors      = []string{proxy.ColorGreen, proxy.ColorYellow, proxy.ColorRed, proxy.ColorBlue}
	adminStates = []string{config.StateReady, config.StateDrain, config.StateMaintenance}
)

// collector exports Runtime.Status at scrape time, so the proxy keeps only
// its own counters and pays nothing per request for Prometheus.
type collector struct{ rt Runtime }

var _ prometheus.Collector = collector{}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := c.rt.Status()
	gauge(descEventLoops, float64(st.EventLoops.Running))
	counter(descLoopExchanges, st.EventLoops.Served, "loop")
	counter(descLoopExchanges, st.EventLoops.HandedOff, "goroutine")
	for _, vs := range st.Services {
		counter(descServiceRequests, vs.Requests, vs.Name)
		counter(descServiceErrors, vs.Errors, vs.Name)
		counter(descServiceRateLimited, vs.RateLimited, vs.Name)
		gauge(descServiceActive, float64(vs.ActiveConns), vs.Name)
		gauge(descServiceQueue, float64(vs.Queue), vs.Name)
		for _, color := range colors {
			gauge(descServiceColor, bool01(vs.Color == color), vs.Name, color)
		}
		if vs.Fallback != "" {
			gauge(descServiceFallbackActive, bool01(vs.FallbackActive), vs.Name)
			counter(descServiceFallbackRequests, vs.FallbackRequests, vs.Name)
		}
		for _, rs := range vs.RealServers {
			l := []string{vs.Name, rs.Name}
			counter(descRSRequests, rs.Requests, l...)
			for class, n := range map[string]uint64{
				"1xx": rs.Responses.C1xx, "2xx": rs.Responses.C2xx, "3xx": rs.Responses.C3xx,
				"4xx": rs.Responses.C4xx, "5xx": rs.Responses.C5xx,
			} {
				counter(descRSResponses, n, vs.Name, rs.Name, class)
			}
			counter(descRSBytesIn, rs.BytesIn, l...)
			counter(descRSBytesOut, rs.BytesOut, l...)
			gauge(descRSActive, float64(rs.Active), l...)
			gauge(descRSMaxConns, float64(rs.MaxConns), l...)
			gauge(descRSUp, bool01(rs.Health == "up"), l...)
			for _, st := range adminStates {
				gauge(descRSState, bool01(rs.State == st), vs.Name, rs.Name, st)
			}
			gauge(descRSWeight, float64(rs.Weight), l...)
			gauge(descRSEffWeight, float64(rs.EffectiveWeight), l...)
			if !rs.Check.Time.IsZero() {
				gauge(descRSCheckLatency, rs.Check.Latency.Seconds(), l...)
				gauge(descRSCheckOK, bool01(rs.Check.OK), l...)
				gauge(descRSCheckTime, float64(rs.Check.Time.UnixNano())/1e9, l...)
			}
			counter(descRSRetries, rs.Retries, l...)
			counter(descRSConnectErrors, rs.ConnectErrors, l...)
			if config.IsL4Mode(vs.Mode) {
				gauge(descRSInactive, float64(rs.InactiveConns), l...)
				counter(descRSPacketsIn, rs.PacketsIn, l...)
				counter(descRSPacketsOut, rs.PacketsOut, l...)
			}
		}
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves /metrics: Fulcrum's series plus the Go runtime's
// and the process's, from a registry of its own (nothing global).
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collector{s.rt},
		haCollector{s.rt}, // ha.go
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	errLog, _ := zap.NewStdLogAt(s.log, zapcore.ErrorLevel)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errLog, ErrorHandling: promhttp.ContinueOnError})
	if !s.cfg.MetricsAuth {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.authenticate(r); err != nil {
			s.writeErr(w, r, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}
