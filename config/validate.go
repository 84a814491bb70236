package config

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fulcrumlb/fulcrum/balancer"
)

// Accepted values of the enumerated keys.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"console", "json"}
	modes      = []string{ModeHTTP, ModeTCP, ModeDR, ModeNAT, ModeTUN}
	states     = []string{StateReady, StateDrain, StateMaintenance}
)

// validName is the form of a virtual service name, which appears in metric
// labels, log fields and admin API paths.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// validate checks a Config decoded by d, reporting every problem to d. It
// uses the decoder's record of where each virtual service and real server
// is, and of which keys the file gave. It also fills in real server names
// from their addresses.
func validate(d *decoder, c *Config) {
	v := &validator{decoder: d, schedulers: balancer.Names()}
	v.global(path{}.with("global"), &c.Global)
	if len(c.VirtualServices) == 0 {
		v.add(path{}.with("virtual_service"), "no virtual services; add a [[virtual_service]] table")
	}
	names := map[string]*VirtualService{}
	var listens []listenAddr // every valid listen address so far, in file order
	for i, vs := range c.VirtualServices {
		p := v.pathOf(vs, path{}.with("virtual_service").elem(i, vs.label))
		if vs.Name != "" {
			if other, ok := names[vs.Name]; ok {
				v.add(p.with("name"), "%q is already used by the virtual_service at line %d", vs.Name, other.Line)
			} else {
				names[vs.Name] = vs
			}
		}
		listens = v.virtualService(p, i, vs, listens)
	}
	v.routeTargets(c, names)
	v.admin(path{}.with("admin"), &c.Admin, listens)
	v.ha(path{}.with("ha"), &c.HA, names)
}

type validator struct {
	*decoder
	schedulers []string
}

// inFile reports whether the file set the key (or table) at p.
func (v *validator) inFile(p path) bool { return v.given[p.indexed()] }

// pathOf returns the decoder's path for a virtual service or real server, or
// fallback for one the decoder did not see.
func (v *validator) pathOf(x any, fallback path) path {
	if p, ok := v.paths[x]; ok {
		return p
	}
	return fallback
}

func (v *validator) global(p path, g *Global) {
	v.oneOf(p.with("log_level"), g.LogLevel, logLevels)
	v.oneOf(p.with("log_format"), g.LogFormat, logFormats)
	v.notNegative(p.with("grace"), g.Grace)
	v.between(p.with("event_loops"), g.EventLoops, 0, MaxEventLoops)
}

// virtualService checks one service; listens holds the listen addresses of
// the services before it (redirect_http ones included), and is returned
// with this one's added.
func (v *validator) virtualService(p path, i int, vs *VirtualService, listens []listenAddr) []listenAddr {
	switch {
	case vs.Name == "":
		v.add(p.with("name"), "required")
	case !validName.MatchString(vs.Name):
		v.add(p.with("name"), "%q must start with a letter or digit and hold only letters, digits, '-', '_' and '.'", vs.Name)
	}

	// Without listen the service is a pool, which routes send requests
	// to; an empty list is more likely a template gone wrong.
	lp := p.with("listen")
	if len(vs.Listen) == 0 && v.inFile(lp) {
		v.add(lp, `empty: give one or more "host:port" addresses, or leave listen out to make this service a pool that routes send requests to`)
	}
	for j, text := range vs.Listen {
		ap := lp.elem(j, nil)
		addr, port, msg := parseHostPort(text, true)
		if msg != "" {
			v.add(ap, "invalid address %q: %s", text, msg)
			continue
		}
		la := listenAddr{text: text, addr: addr, port: port, line: v.line(ap), vs: vs, vsIndex: i,
			udp: IsL4Mode(vs.Mode) && vs.Protocol == ProtocolUDP}
		if msg := la.conflict(listens); msg != "" {
			v.add(ap, "%s", msg)
		}
		listens = append(listens, la)
	}

	v.oneOf(p.with("mode"), vs.Mode, modes)
	if IsL4Mode(vs.Mode) {
		// The kernel forwards the packets: only the keys of validate_l4.go
		// apply, and the userspace proxy's are refused there.
		v.l4(p, vs)
		v.healthCheck(p.with("health_check"), &vs.HealthCheck)
		v.persistence(p.with("persistence"), vs)
		v.realServers(p, vs)
		return listens
	}
	if pp := p.with("protocol"); v.inFile(pp) {
		v.add(pp, "used only in modes dr, nat and tun (the kernel's IPVS): an %s service is tcp; real_server.protocol says what it speaks to a real server", vs.Mode)
	}
	if !slices.Contains(v.schedulers, vs.Scheduler) {
		msg := fmt.Sprintf("unknown scheduler %q (known: %s)", vs.Scheduler, strings.Join(v.schedulers, ", "))
		if s := closest(vs.Scheduler, v.schedulers); s != "" {
			msg = fmt.Sprintf("unknown scheduler %q (did you mean %q?)", vs.Scheduler, s)
		}
		v.add(p.with("scheduler"), "%s", msg)
	} else {
		v.scheduler(p, vs)
	}
	v.between(p.with("retries"), vs.Retries, 0, MaxRetries)
	v.between(p.with("max_conns"), vs.MaxConns, 0, -1)
	v.notNegative(p.with("queue_timeout"), vs.QueueTimeout)

	tp := p.with("timeouts")
	for _, t := range []struct {
		key string
		d   time.Duration
	}{
		{"connect", vs.Timeouts.Connect},
		{"client", vs.Timeouts.Client},
		{"client_header", vs.Timeouts.ClientHeader},
		{"server", vs.Timeouts.Server},
	} {
		if t.d <= 0 {
			v.add(tp.with(t.key), "must be > 0, got %s", t.d)
		}
	}

	v.healthCheck(p.with("health_check"), &vs.HealthCheck)
	v.persistence(p.with("persistence"), vs)
	listens = v.tls(p.with("tls"), i, vs, listens)
	v.transparency(p, vs)
	v.l7(p, vs)
	v.realServers(p, vs)
	return listens
}

func (v *validator) realServers(p path, vs *VirtualService) {
	rp := p.with("real_server")
	switch {
	case len(vs.RealServers) > 0 || vs.Fallback != "":
		// A fallback alone answers every request: a maintenance page.
	case len(vs.Routes) > 0 && !vs.IsPool():
		// Requests no route matches get 404.
	case vs.IsPool():
		v.add(rp, "pool has no real servers (and no fallback)")
	default:
		v.add(rp, "virtual service has no real servers")
	}
	byName := map[string]*RealServer{}
	byAddr := map[netip.AddrPort]*RealServer{}
	for i, rs := range vs.RealServers {
		p := v.pathOf(rs, rp.elem(i, rs.label))
		switch addr, port, msg := parseHostPort(rs.Address, false); {
		case rs.Address == "":
			v.add(p.with("address"), "required")
		case msg != "":
			v.add(p.with("address"), "invalid address %q: %s", rs.Address, msg)
		default:
			ap := netip.AddrPortFrom(addr, port)
			if other, ok := byAddr[ap]; ok {
				v.add(p.with("address"), "%q is already used by the real_server at line %d", rs.Address, other.Line)
			} else {
				byAddr[ap] = rs
			}
		}
		v.between(p.with("weight"), rs.Weight, 0, MaxWeight)
		v.between(p.with("max_conns"), rs.MaxConns, 0, -1)
		v.oneOf(p.with("state"), rs.State, states)
		if !IsL4Mode(vs.Mode) { // refused in the L4 modes (l4RealServer)
			v.realServerTLS(p, vs, rs)
			v.realServerTransparency(p, vs, rs)
		}

		// Two unnamed servers share a name only if they share an address,
		// which is reported above.
		name := cmp.Or(rs.Name, rs.Address)
		if other, ok := byName[name]; ok && name != "" && (rs.Name != "" || other.Name != "") {
			v.add(p.with("name"), "%q is already used by the real_server at line %d", name, other.Line)
		} else if !ok {
			byName[name] = rs
		}
	}
	// Only now, so that the checks above know which names were given.
	for _, rs := range vs.RealServers {
		rs.Name = cmp.Or(rs.Name, rs.Address)
	}
}

func (v *validator) oneOf(p path, got string, want []string) {
	if slices.Contains(want, got) {
		return
	}
	list := strings.Join(want[:len(want)-1], ", ") + " or " + want[len(want)-1]
	v.add(p, "must be %s, got %q", list, got)
}

// between checks lo <= n <= hi; hi < 0 means no upper bound.
func (v *validator) between(p path, n, lo, hi int) {
	switch {
	case hi < 0 && n < lo:
		v.add(p, "must be >= %d, got %d", lo, n)
	case hi >= 0 && (n < lo || n > hi):
		v.add(p, "must be between %d and %d, got %d", lo, hi, n)
	}
}

func (v *validator) notNegative(p path, d time.Duration) {
	if d < 0 {
		v.add(p, "must be >= 0, got %s", d)
	}
}

// parseHostPort parses an IP:port address. The host must be an IP literal
// (bracketed if IPv6), or empty for every address if emptyHost is set:
// hostnames are refused because resolving them at start-up would make the
// addresses depend on DNS. msg says what is wrong, if anything.
func parseHostPort(s string, emptyHost bool) (addr netip.Addr, port uint16, msg string) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		msg = err.Error()
		if ae, ok := err.(*net.AddrError); ok {
			msg = ae.Err
		}
		// "::1:80": say how to write what was probably meant.
		if i := strings.LastIndexByte(s, ':'); i > 0 && strings.Contains(msg, "too many colons") {
			if _, err := netip.ParseAddr(s[:i]); err == nil {
				msg += fmt.Sprintf(` (IPv6 addresses go in brackets: "[%s]%s")`, s[:i], s[i:])
			}
		}
		return addr, 0, msg
	}
	switch {
	case host == "" && !emptyHost:
		return addr, 0, "host is required"
	case host == "":
	default:
		a, err := netip.ParseAddr(host)
		switch {
		case err != nil && isHostname(host):
			return addr, 0, "host must be an IP address, not a hostname"
		case err != nil:
			return addr, 0, fmt.Sprintf("host %q is not an IP address", host)
		}
		addr = a.Unmap()
	}
	n, err := strconv.Atoi(portText)
	switch {
	case err != nil && portText == "":
		return addr, 0, "port is required"
	case err != nil:
		return addr, 0, fmt.Sprintf("port must be a number, got %q", portText)
	case n < 1 || n > 65535:
		return addr, 0, fmt.Sprintf("port must be between 1 and 65535, got %d", n)
	}
	return addr, uint16(n), ""
}

// isHostname reports whether s looks like a DNS name rather than a mistyped
// IP address.
func isHostname(s string) bool {
	return !strings.Contains(s, ":") && strings.ContainsFunc(s, func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
	})
}

// listenAddr is a parsed listen address, for finding two services (or one
// twice) bound to the same socket.
type listenAddr struct {
	text    string
	addr    netip.Addr // the zero Addr for an empty host
	port    uint16
	line    int
	vs      *VirtualService
	vsIndex int
	key     string // where in vs, if not listen: "tls.redirect_http"
	udp     bool   // an L4 udp VIP, which takes no TCP port
}

// all reports whether the address listens on every address of both families:
// an empty host, which Go binds dual-stack, or "::", which Linux binds
// dual-stack unless net.ipv6.bindv6only is set.
func (a listenAddr) all() bool { return !a.addr.IsValid() || a.addr == netip.IPv6Unspecified() }

// covers reports whether a binding a takes b's address too.
func (a listenAddr) covers(b listenAddr) bool {
	switch {
	case a.all():
		return true
	case a.addr == netip.IPv4Unspecified():
		return b.addr.Is4()
	}
	return a.addr == b.addr
}

// scope describes a wildcard address's reach, for messages.
func (a listenAddr) scope() string {
	switch {
	case a.all():
		return " (every address)"
	case a.addr == netip.IPv4Unspecified():
		return " (every IPv4 address)"
	}
	return ""
}

// conflict checks a against the addresses before it and describes the first
// that binds the same socket, or returns "".
func (a listenAddr) conflict(before []listenAddr) string {
	for _, b := range before {
		if a.port != b.port || a.udp != b.udp || !a.covers(b) && !b.covers(a) {
			continue
		}
		if a.vs == b.vs && a.key == b.key {
			if a.text == b.text {
				return fmt.Sprintf("%q is listed twice (also at line %d)", a.text, b.line)
			}
			return fmt.Sprintf("%q%s overlaps %q%s at line %d", a.text, a.scope(), b.text, b.scope(), b.line)
		}
		other := "virtual_service #" + strconv.Itoa(b.vsIndex+1)
		if b.vs.Name != "" {
			other = fmt.Sprintf("virtual_service %q", b.vs.Name)
		}
		if b.key != "" {
			other += " (" + b.key + ")"
		}
		if a.addr == b.addr {
			return fmt.Sprintf("%q is already used by %s at line %d", a.text, other, b.line)
		}
		return fmt.Sprintf("%q%s overlaps %q%s of %s at line %d", a.text, a.scope(), b.text, b.scope(), other, b.line)
	}
	return ""
}
