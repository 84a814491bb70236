package proxy

import (
	"errors"
	"time"
)

// Errors of the runtime API (Proxy.SetState and friends). Callers map them
// to statuses: ErrNotFound to 404, ErrInvalid to 400.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
)

// Colors summarise a virtual service or real server at a glance, as
// appliances do.
const (
	ColorGreen  = "green"  // every real server up and ready
	ColorYellow = "yellow" // some real servers down
	ColorRed    = "red"    // no real server available
	ColorBlue   = "blue"   // a real server deliberately offline (drain or maintenance)
)

// Status is a snapshot of every virtual service, in configuration order.
type Status struct {
	Services   []ServiceStatus `json:"services"`
	EventLoops EventLoopStatus `json:"event_loops"`
}

// EventLoopStatus is what the event loops serving plain HTTP/1.1 clients
// (global.event_loops) have done since the process started.
type EventLoopStatus struct {
	// Running is the loops started (they start with their first client).
	Running int `json:"running"`
	// Served counts the exchanges a loop served whole; HandedOff those it
	// gave to a goroutine (a request body still on its way, a dial, a
	// large or chunked answer, …). Many handed off means the traffic mostly leaves the
	// loops' fast path.
	Served    uint64 `json:"served"`
	HandedOff uint64 `json:"handed_off"`
}

// ServiceStatus is a snapshot of one virtual service.
type ServiceStatus struct {
	Name      string   `json:"name"`
	Mode      string   `json:"mode"`
	Protocol  string   `json:"protocol,omitempty"` // an L4 service's (modes dr, nat, tun): tcp or udp
	Scheduler string   `json:"scheduler"`
	Listen    []string `json:"listen"`
	// Pool is true for a virtual service without listen, which only routes
	// reach.
	Pool  bool   `json:"pool"`
	Color string `json:"color"`
	// ActiveConns is the client connections open now.
	ActiveConns int64 `json:"active_connections"`
	// Queue is the requests waiting for a real server slot.
	Queue int `json:"queue"`
	// Requests counts HTTP requests (tcp mode: connections) received; for
	// an L4 service the connections IPVS scheduled, as are ActiveConns.
	Requests uint64 `json:"requests"`
	// Errors counts requests the proxy itself failed (4xx/5xx it generated).
	Errors uint64 `json:"errors"`
	// RateLimited counts requests answered 429 by rate_limit (also
	// counted in Errors).
	RateLimited uint64             `json:"rate_limited"`
	RealServers []RealServerStatus `json:"real_servers"`
	// Certificates are the TLS certificates served (none without TLS).
	Certificates []CertificateStatus `json:"certificates,omitempty"`
	// Fallback is the fallback server's address ("" for none).
	// FallbackActive is true while it answers the requests: no real
	// server is available. FallbackRequests counts the requests sent to
	// it.
	Fallback         string `json:"fallback,omitempty"`
	FallbackActive   bool   `json:"fallback_active"`
	FallbackRequests uint64 `json:"fallback_requests"`
}

// CertificateStatus is one served TLS certificate. Expiring is true within
// 14 days of NotAfter (and after it).
type CertificateStatus struct {
	File     string    `json:"file"`
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
	Expiring bool      `json:"expiring"`
}

// RealServerStatus is a snapshot of one real server.
type RealServerStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Color   string `json:"color"`
	// Health is the operational state: up or down.
	Health string `json:"health"`
	// State is the admin state: ready, drain or maintenance.
	State string `json:"state"`
	// Weight is the configured weight (as last set by the file or the API);
	// EffectiveWeight is what the scheduler uses after an agent's percentage
	// and slow start.
	Weight          int   `json:"weight"`
	EffectiveWeight int   `json:"effective_weight"`
	MaxConns        int64 `json:"max_conns"`
	// Active is the requests (http) or connections (tcp; L4: IPVS's
	// established ones) in flight.
	Active int64 `json:"active"`
	// InactiveConns are an L4 real server's other IPVS connections (TCP
	// closing or in TIME_WAIT, UDP); 0 for the other modes.
	InactiveConns int64 `json:"inactive_connections,omitempty"`
	// Requests counts requests (tcp and L4: connections) sent to the server.
	Requests uint64 `json:"requests"`
	// Responses counts responses by status class.
	Responses     ResponseClasses `json:"responses"`
	BytesIn       uint64          `json:"bytes_in"`  // from the real server
	BytesOut      uint64          `json:"bytes_out"` // to the real server
	ConnectErrors uint64          `json:"connect_errors"`
	Retries       uint64          `json:"retries"`
	Check         CheckStatus     `json:"check"`
	// PacketsIn and PacketsOut count an L4 real server's packets from it
	// and to it, as IPVS saw them (PacketsIn and BytesIn are 0 with dr and
	// tun, whose replies bypass the director); 0 for the other modes.
	PacketsIn  uint64 `json:"packets_in,omitempty"`
	PacketsOut uint64 `json:"packets_out,omitempty"`
}

// ResponseClasses counts responses by status class.
type ResponseClasses struct {
	C1xx uint64 `json:"1xx"`
	C2xx uint64 `json:"2xx"`
	C3xx uint64 `json:"3xx"`
	C4xx uint64 `json:"4xx"`
	C5xx uint64 `json:"5xx"`
}

// CheckStatus is the last health check of a real server.
type CheckStatus struct {
	// Type is the check type (tcp, http, https, send_expect, none).
	Type string `json:"type"`
	// OK, Detail and Latency describe the last check; Time is zero before
	// the first one.
	OK      bool          `json:"ok"`
	Detail  string        `json:"detail"`
	Latency time.Duration `json:"latency_ns"`
	Time    time.Time     `json:"time"`
	// Agent is the last agent reply ("" if there is no agent check or it
	// has not answered).
	Agent string `json:"agent,omitempty"`
}

// Event kinds.
const (
	EventHealth = "health" // a real server went up or down
	EventAgent  = "agent"  // an agent reply changed state, weight or max_conns
	EventAdmin  = "admin"  // an admin changed a state or weight, added or removed a server
	EventReload = "reload" // the configuration was reloaded, or a reload was refused
	EventIPVS   = "ipvs"   // the kernel's IPVS could not be programmed, or could again
)

// Event is one entry of the recent events shown by the web UI.
type Event struct {
	ID         uint64    `json:"id"`
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	Service    string    `json:"service,omitempty"`
	RealServer string    `json:"real_server,omitempty"`
	Message    string    `json:"message"`
}
