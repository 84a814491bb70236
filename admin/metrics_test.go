package admin

import (
	"strings"
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, req{method: "GET", path: "/metrics", basic: true})
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics = %d %q", r.status, r.header.Get("Content-Type"))
	}
	want := []string{
		`fulcrum_service_requests_total{service="web"} 2000`,
		`fulcrum_service_errors_total{service="web"} 4`,
		`fulcrum_service_active_connections{service="web"} 7`,
		`fulcrum_service_queue_length{service="web"} 1`,
		`fulcrum_service_color{color="green",service="web"} 1`,
		`fulcrum_service_color{color="red",service="web"} 0`,
		`fulcrum_service_color{color="red",service="db"} 1`,
		`fulcrum_service_fallback_active{service="web"} 0`,
		`fulcrum_service_fallback_requests_total{service="web"} 12`,
		`fulcrum_service_rate_limited_total{service="web"} 5`,
		`fulcrum_real_server_requests_total{real_server="web1",service="web"} 1000`,
		`fulcrum_real_server_responses_total{class="2xx",real_server="web1",service="web"} 990`,
		`fulcrum_real_server_responses_total{class="5xx",real_server="web1",service="web"} 10`,
		`fulcrum_real_server_responses_total{class="1xx",real_server="web1",service="web"} 0`,
		`fulcrum_real_server_received_bytes_total{real_server="web1",service="web"} 5000`,
		`fulcrum_real_server_sent_bytes_total{real_server="web1",service="web"} 700`,
		`fulcrum_real_server_active_connections{real_server="web1",service="web"} 3`,
		`fulcrum_real_server_max_connections{real_server="web1",service="web"} 100`,
		`fulcrum_real_server_up{real_server="web1",service="web"} 1`,
		`fulcrum_real_server_up{real_server="db1",service="db"} 0`,
		`fulcrum_real_server_admin_state{real_server="web1",service="web",state="ready"} 1`,
		`fulcrum_real_server_admin_state{real_server="web1",service="web",state="maintenance"} 0`,
		`fulcrum_real_server_weight{real_server="web2",service="web"} 2`,
		`fulcrum_real_server_effective_weight{real_server="web2",service="web"} 2`,
		`fulcrum_real_server_check_latency_seconds{real_server="web1",service="web"} 0.0015`,
		`fulcrum_real_server_check_success{real_server="db1",service="db"} 0`,
		`fulcrum_real_server_check_timestamp_seconds{real_server="web1",service="web"} 1.7723664e+09`,
		`fulcrum_real_server_retries_total{real_server="web1",service="web"} 1`,
		`fulcrum_real_server_connect_errors_total{real_server="web1",service="web"} 2`,
		`fulcrum_event_loops 2`,
		`fulcrum_event_loop_exchanges_total{path="loop"} 900`,
		`fulcrum_event_loop_exchanges_total{path="goroutine"} 100`,
		"# TYPE fulcrum_real_server_requests_total counter",
		"# TYPE fulcrum_real_server_up gauge",
		"go_goroutines ",
		"process_",
	}
	for _, w := range want {
		if !strings.Contains(r.body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if strings.Contains(r.body, `fulcrum_service_fallback_active{service="db"}`) {
		t.Error("/metrics has fallback_active for db, which has no fallback")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", r.body)
	}

	// A state change shows at the next scrape: nothing is cached.
	f.rt.SetState("web", "web1", config.StateMaintenance)
	r = f.do(t, req{method: "GET", path: "/metrics", basic: true})
	if !strings.Contains(r.body, `fulcrum_real_server_admin_state{real_server="web1",service="web",state="maintenance"} 1`) {
		t.Error("/metrics does not follow the runtime's state")
	}
}

func TestMetricsAuth(t *testing.T) {
	tests := []struct {
		name        string
		metricsAuth bool
		basic       bool
		want        int
	}{
		{"auth required, none given", true, false, 401},
		{"auth required, given", true, true, 200},
		{"auth off", false, false, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(a *config.Admin) { a.MetricsAuth = tt.metricsAuth })
			r := f.do(t, req{method: "GET", path: "/metrics", basic: tt.basic})
			if r.status != tt.want {
				t.Fatalf("/metrics = %d, want %d", r.status, tt.want)
			}
			// The API stays protected when /metrics is open.
			if r := f.do(t, req{method: "GET", path: "/api/v1/status"}); r.status != 401 {
				t.Errorf("/api/v1/status without credentials = %d", r.status)
			}
		})
	}
}

// TestMetricsL4 checks the kernel's counters of an L4 service: its real
// servers' inactive connections and packets, exported for L4 services only.
func TestMetricsL4(t *testing.T) {
	f := newFixture(t)
	f.rt.mu.Lock()
	f.rt.status.Services = append(f.rt.status.Services, proxy.ServiceStatus{
		Name: "rdp", Mode: config.ModeDR, Protocol: config.ProtocolTCP, Scheduler: "wlc", Listen: []string{"10.0.0.30:3389"},
		Color: proxy.ColorGreen, Requests: 42, ActiveConns: 3,
		RealServers: []proxy.RealServerStatus{{
			Name: "ts1", Address: "10.0.0.41:3389", Color: proxy.ColorGreen, Health: "up", State: config.StateReady,
			Weight: 1, EffectiveWeight: 1, Active: 3, InactiveConns: 2, Requests: 40, BytesOut: 9000, PacketsOut: 120,
		}},
	})
	f.rt.mu.Unlock()
	r := f.do(t, req{method: "GET", path: "/metrics", basic: true})
	for _, w := range []string{
		`fulcrum_service_requests_total{service="rdp"} 42`,
		`fulcrum_service_active_connections{service="rdp"} 3`,
		`fulcrum_real_server_requests_total{real_server="ts1",service="rdp"} 40`,
		`fulcrum_real_server_active_connections{real_server="ts1",service="rdp"} 3`,
		`fulcrum_real_server_inactive_connections{real_server="ts1",service="rdp"} 2`,
		`fulcrum_real_server_sent_bytes_total{real_server="ts1",service="rdp"} 9000`,
		`fulcrum_real_server_sent_packets_total{real_server="ts1",service="rdp"} 120`,
		`fulcrum_real_server_received_packets_total{real_server="ts1",service="rdp"} 0`,
		"# TYPE fulcrum_real_server_inactive_connections gauge",
		"# TYPE fulcrum_real_server_sent_packets_total counter",
	} {
		if !strings.Contains(r.body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if strings.Contains(r.body, `fulcrum_real_server_sent_packets_total{real_server="web1"`) {
		t.Error("/metrics has packet counters for an http service")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", r.body)
	}
}
