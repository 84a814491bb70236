package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/admin"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/ha"
	"github.com/fulcrumlb/fulcrum/tlsterm"
)

// stickResync is how often a Master sends its whole stick tables again:
// the change feed carries new entries, not the refresh of one a client
// keeps using, nor entries the Backup missed while it was away.
const stickResync = 30 * time.Second

// haSync is the sending side of [ha] sync_peer: while this node is Master
// it pushes its configuration file after every reload and streams its
// stick-table updates to the peer (admin/syncclient.go). The receiving side
// is the admin API's (admin.EnableSync), on with [ha] and [admin].
type haSync struct {
	mu     sync.Mutex
	pusher *admin.Pusher      // nil without sync_peer
	key    [4]string          // sync_peer, sync_user, sync_password_file, sync_ca it was built with
	cancel context.CancelFunc // ends the pushing; nil while not Master
	done   chan struct{}      // closed when the pushing goroutines ended
}

// enableSyncReceive lets the peer push to this node: with [ha] and an admin
// server, the sync endpoints apply pushed files to path and stick entries
// to the proxy; a Master refuses pushes.
func (c *controller) enableSyncReceive(cfg *config.Config) {
	if c.admin == nil {
		return
	}
	if !cfg.HA.Enabled() || c.path == "" {
		c.admin.EnableSync(admin.SyncOptions{}) // pushes refused
		return
	}
	c.admin.EnableSync(admin.SyncOptions{
		ConfigPath: c.path,
		Master:     c.isMaster,
		ApplyStick: c.ApplyStick,
	})
}

// isMaster reports whether a virtual router of this node is Master.
func (c *controller) isMaster() bool {
	st, ok := c.HAStatus()
	if !ok {
		return false
	}
	for _, f := range st.Families {
		if f.State == ha.Master.String() {
			return true
		}
	}
	return false
}

// configureSync builds (or rebuilds, or drops) the pusher for h's
// sync_peer. The stick feed is opened once: it stays on from then.
func (c *controller) configureSync(h config.HA) error {
	s := &c.sync
	s.mu.Lock()
	defer s.mu.Unlock()
	key := [4]string{h.SyncPeer, h.SyncUser, h.SyncPasswordFile, h.SyncCA}
	if s.pusher != nil && s.key == key {
		return nil
	}
	s.stopLocked()
	s.pusher, s.key = nil, key
	if h.SyncPeer == "" || !h.Enabled() {
		return nil
	}
	// A Master goes on pushing with the new settings (haChanged waits for
	// s.mu, held until this returns).
	defer func() { go c.haChanged() }()
	password, err := config.ReadSyncPassword(h.SyncPasswordFile)
	if err != nil {
		return err
	}
	pc := admin.PusherConfig{Peer: h.SyncPeer, User: h.SyncUser, Password: password, Log: c.log.Named("sync")}
	if h.SyncCA != "" {
		if pc.RootCAs, err = tlsterm.LoadCAs(h.SyncCA); err != nil {
			return fmt.Errorf("sync_ca: %w", err)
		}
	}
	if s.pusher, err = admin.NewPusher(pc); err != nil {
		return err
	}
	if c.stickFeed == nil {
		c.stickFeed = c.StickUpdates()
	}
	return nil
}

// haChanged follows the virtual routers' transitions: pushing runs while
// this node is Master.
func (c *controller) haChanged() {
	master := c.isMaster()
	s := &c.sync
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case master && s.pusher != nil && s.cancel == nil:
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel, s.done = cancel, make(chan struct{})
		pu, feed, done := s.pusher, c.stickFeed, s.done
		c.log.Info("HA sync: pushing to the peer while Master", zap.String("peer", s.key[0]))
		if file, err := os.ReadFile(c.path); err == nil {
			pu.QueueConfig(file)
		}
		go func() {
			defer close(done)
			var wg sync.WaitGroup
			wg.Go(func() { pu.Run(ctx, feed) })
			t := time.NewTicker(stickResync)
			defer t.Stop()
			for {
				if err := pu.ResyncStick(ctx, c.StickSnapshot()); err != nil && ctx.Err() == nil {
					c.log.Warn("HA sync: stick tables not sent", zap.Error(err))
				}
				select {
				case <-t.C:
				case <-ctx.Done():
					wg.Wait()
					return
				}
			}
		}()
	case !master:
		s.stopLocked()
	}
}

// pushConfig queues the configuration file for the peer after a reload,
// when this node is Master.
func (c *controller) pushConfig() {
	s := &c.sync
	s.mu.Lock()
	pu, on := s.pusher, s.cancel != nil
	s.mu.Unlock()
	if !on {
		return
	}
	if file, err := os.ReadFile(c.path); err == nil {
		pu.QueueConfig(file)
	}
}

// stopSync ends the pushing (at shutdown).
func (c *controller) stopSync() {
	c.sync.mu.Lock()
	defer c.sync.mu.Unlock()
	c.sync.stopLocked()
}

func (s *haSync) stopLocked() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
}
