package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/admin"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/ha"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// haRun is the [ha] section at run time, in the controller.
type haRun struct {
	mu    sync.Mutex
	group *ha.Group // nil without [ha], or in FAULT
	cfg   config.HA
	// track_ping: the pinger's watch, and whether no ping node answers
	// (FAULT: the group is stopped until one does).
	stopPing context.CancelFunc
	fault    bool
}

// startHA builds and starts the group of cfg's [ha], if any. It runs after
// the proxy listens, so that traffic to the floating IPs flows as soon as
// this node is Master.
func (c *controller) startHA(cfg *config.Config) error {
	c.ha.mu.Lock()
	defer c.ha.mu.Unlock()
	return c.startHALocked(cfg.HA)
}

func (c *controller) startHALocked(h config.HA) error {
	if !h.Enabled() {
		return nil
	}
	if err := c.startGroupLocked(h); err != nil {
		return err
	}
	if len(h.TrackPing) > 0 {
		var targets []netip.Addr
		for _, s := range h.TrackPing {
			if a, err := netip.ParseAddr(s); err == nil {
				targets = append(targets, a.Unmap())
			}
		}
		p, err := ha.NewPinger(targets, h.AdvertInterval)
		if err != nil {
			c.stopHALocked()
			return fmt.Errorf("ha: track_ping: %w", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.ha.stopPing = cancel
		go p.Run(ctx)
		go c.watchPing(ctx, p, h)
	}
	return nil
}

// watchPing moves the node to FAULT when no ping node has answered for three
// advert intervals (the group stops as on shutdown: a Master hands over at
// once and drops the addresses), and out of it when one answers again (a
// new group starts, as at start-up).
func (c *controller) watchPing(ctx context.Context, p *ha.Pinger, h config.HA) {
	t := time.NewTicker(h.AdvertInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok := p.Reachable()
		c.ha.mu.Lock()
		if ctx.Err() == nil {
			switch {
			case !ok && !c.ha.fault:
				from := "backup"
				if g := c.ha.group; g != nil {
					from = g.Status().State
					g.Stop()
				}
				c.ha.group, c.ha.fault = nil, true
				c.log.Warn("HA state", zap.String("from", from), zap.String("to", "fault"), zap.Int("vrid", h.VRID),
					zap.Strings("track_ping", h.TrackPing), zap.String("why", "no ping node answers"))
				go c.haChanged()
			case ok && c.ha.fault:
				c.ha.fault = false
				c.log.Info("HA: a ping node answers again: leaving FAULT", zap.Int("vrid", h.VRID))
				if err := c.startGroupLocked(h); err != nil {
					c.log.Error("HA: cannot restart after FAULT", zap.Error(err))
					c.ha.fault = true
				}
			}
		}
		c.ha.mu.Unlock()
	}
}

// startGroupLocked builds and starts the VRRP group of h.
func (c *controller) startGroupLocked(h config.HA) error {
	tracked := slices.Clone(h.TrackServices)
	gc := ha.GroupConfig{
		Interface:      h.Interface,
		VRID:           uint8(h.VRID),
		Priority:       uint8(h.Priority),
		AdvertInterval: h.AdvertInterval,
		Preempt:        h.Preempt,
		PreemptDelay:   h.PreemptDelay,
		VIPs:           h.VIPs,
		Peers:          h.Peers,
		Notify:         h.NotifyArgs,
		TrackWeight:    uint8(h.TrackWeight),
		Log:            c.log.Named("ha"),
		// Not from the node's goroutine: haChanged reads the group's
		// status, and Stop holds c.ha.mu while the nodes wind down.
		OnChange: func(string, ha.State, ha.State) { go c.haChanged() },
	}
	if len(tracked) > 0 {
		gc.TrackDown = func() bool { return c.trackedDown(tracked) }
	}
	g, err := ha.NewGroup(gc)
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	g.Start(context.Background())
	c.ha.group, c.ha.cfg = g, h
	c.log.Info("HA started", zap.String("interface", h.Interface), zap.Int("vrid", h.VRID),
		zap.Int("priority", h.Priority), zap.Strings("floating_ips", h.FloatingIPs))
	return nil
}

// trackedDown reports whether one of the tracked services is red: none of
// its real servers is available.
func (c *controller) trackedDown(names []string) bool {
	for _, s := range c.Status().Services {
		if s.Color == proxy.ColorRed && slices.Contains(names, s.Name) {
			return true
		}
	}
	return false
}

// stopHA stops the group gracefully: a Master sends priority 0, so that
// the Backup takes over at once (RFC 5798 §6.4.3), and drops the addresses.
// It runs first on SIGTERM/SIGINT, before the proxy drains.
func (c *controller) stopHA() {
	c.ha.mu.Lock()
	defer c.ha.mu.Unlock()
	c.stopHALocked()
}

func (c *controller) stopHALocked() {
	if c.ha.stopPing != nil {
		c.ha.stopPing()
		c.ha.stopPing, c.ha.fault = nil, false
	}
	if c.ha.group == nil {
		return
	}
	c.ha.group.Stop()
	c.ha.group = nil
	c.log.Info("HA stopped")
}

// reloadHA applies a reloaded [ha]: an unchanged one keeps running; a
// changed one restarts the group (Stop, which hands over gracefully if this
// node was Master, and a new group), the simplest correct behaviour: the
// VRID, the interface or the addresses may all have changed.
func (c *controller) reloadHA(h config.HA) error {
	c.ha.mu.Lock()
	defer c.ha.mu.Unlock()
	running := c.ha.group != nil || c.ha.fault
	if running && haEqual(c.ha.cfg, h) || !running && !h.Enabled() {
		return nil
	}
	c.log.Info("HA: [ha] changed: restarting the group")
	c.stopHALocked()
	return c.startHALocked(h)
}

// haEqual compares two [ha] sections, whatever their lines.
func haEqual(a, b config.HA) bool {
	a.Line, b.Line = 0, 0
	return reflect.DeepEqual(a, b)
}

// HAStatus implements admin.HARuntime.
func (c *controller) HAStatus() (ha.Status, bool) {
	c.ha.mu.Lock()
	g, fault, h := c.ha.group, c.ha.fault, c.ha.cfg
	c.ha.mu.Unlock()
	if fault {
		st := ha.Status{Interface: h.Interface, VRID: h.VRID, Priority: h.Priority, State: "fault"}
		for _, fam := range []string{ha.FamilyIPv4, ha.FamilyIPv6} {
			if slices.ContainsFunc(h.VIPs, func(p netip.Prefix) bool { return p.Addr().Is6() == (fam == ha.FamilyIPv6) }) {
				st.Families = append(st.Families, ha.FamilyStatus{Family: fam, State: "fault"})
			}
		}
		return st, true
	}
	if g == nil {
		return ha.Status{}, false
	}
	return g.Status(), true
}

// HAOverride implements admin.HARuntime.
func (c *controller) HAOverride(action string) error {
	c.ha.mu.Lock()
	g := c.ha.group
	c.ha.mu.Unlock()
	if g == nil {
		return errors.New("high availability is off")
	}
	switch action {
	case "takeover":
		return g.Takeover()
	case "release":
		return g.Release()
	case "auto":
		return g.Auto()
	}
	return fmt.Errorf("unknown HA action %q", action)
}

var _ admin.HARuntime = (*controller)(nil)
