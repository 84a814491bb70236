package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fulcrumlb/fulcrum/admin"
	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// serve runs the proxy (and the admin server, if configured) for cfg until
// SIGTERM or SIGINT, then stops gracefully within global.grace. SIGHUP
// reloads the file at path (empty for the demo, which has none). ready, if
// not nil, is called once every listener is bound.
func serve(cfg *config.Config, path string, stderr io.Writer, ready func()) int {
	log, level, err := newLogger(cfg.Global, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum: %v\n", err)
		return 1
	}
	defer log.Sync()
	p, err := proxy.New(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	ctl := &controller{Proxy: p, path: path, cfg: cfg, log: log, level: level}
	if cfg.Admin.Listen != "" {
		if ctl.admin, err = admin.New(cfg.Admin, ctl, log.Named("admin")); err != nil {
			log.Error("cannot start", zap.Error(err))
			return 1
		}
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sig)
	if err := p.Start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	if ctl.admin != nil {
		if err := ctl.admin.Start(); err != nil {
			log.Error("cannot start", zap.Error(err))
			p.Shutdown(context.Background())
			return 1
		}
	}
	// [ha] after the proxy listens: a Master's floating IPs serve at once.
	// Sync first, so that becoming Master starts the pushing.
	ctl.enableSyncReceive(cfg)
	err = ctl.configureSync(cfg.HA)
	if err == nil {
		err = ctl.startHA(cfg)
	}
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		if ctl.admin != nil {
			ctl.admin.Shutdown(context.Background())
		}
		p.Shutdown(context.Background())
		return 1
	}
	log.Info("fulcrum started", zap.String("version", version), zap.String("config", cfg.File))
	if ready != nil {
		ready()
	}
	var s os.Signal
	for s = range sig {
		if s != syscall.SIGHUP {
			break
		}
		ctl.Reload() // logs its outcome
	}
	// HA first: the Backup takes over at once (priority 0) while this
	// node drains what it has.
	ctl.stopHA()
	ctl.stopSync()
	grace := ctl.grace()
	log.Info("stopping: finishing in-flight requests", zap.Stringer("signal", s), zap.Duration("grace", grace))
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	go func() { // a second signal stops at once
		for {
			select {
			case s := <-sig:
				if s == syscall.SIGHUP {
					continue
				}
				log.Warn("second signal: stopping now")
				cancel()
			case <-ctx.Done():
			}
			return
		}
	}()
	if ctl.admin != nil {
		ctl.admin.Shutdown(ctx)
	}
	if err := p.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		log.Warn("grace period over: remaining connections closed")
	}
	log.Info("fulcrum stopped")
	return 0
}

// controller is the runtime the admin API drives: the proxy, plus reloading
// the configuration file.
type controller struct {
	*proxy.Proxy
	path  string
	log   *zap.Logger
	level zap.AtomicLevel
	admin *admin.Server // nil without [admin]
	ha    haRun         // [ha] at run time (ha.go)
	sync  haSync        // [ha] sync_peer's sending side (hasync.go)
	// stickFeed is the proxy's stick-table change feed, opened for the
	// first sync_peer and kept from then.
	stickFeed <-chan proxy.StickUpdate

	mu  sync.Mutex // one reload at a time
	cfg *config.Config
}

// Reload reads and validates the configuration file and applies it. A file
// with problems changes nothing: the problems are logged, recorded as an
// event and returned (as config.Errors).
func (c *controller) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path == "" {
		err := errors.New("reload: the demo has no configuration file to reload")
		c.log.Warn("reload refused", zap.Error(err))
		return err
	}
	c.log.Info("reloading", zap.String("config", c.path))
	cfg, err := config.Load(c.path)
	if err == nil {
		err = c.Apply(cfg)
	}
	if err != nil {
		var problems config.Errors
		msg := err.Error()
		if errors.As(err, &problems) {
			msg = fmt.Sprintf("%d problems; first: %s", len(problems), problems[0].Error())
			if len(problems) == 1 {
				msg = problems[0].Error()
			}
		}
		c.log.Error("reload refused: the running configuration stays", zap.Error(err))
		c.RecordEvent(proxy.EventReload, "", "", "reload refused: "+msg)
		return err
	}
	if l, err := zapcore.ParseLevel(cfg.Global.LogLevel); err == nil {
		c.level.SetLevel(l)
	}
	if cfg.Global.LogFormat != c.cfg.Global.LogFormat {
		c.log.Warn("global.log_format changes on restart only")
	}
	if c.admin != nil || cfg.Admin.Listen != "" {
		old, new := c.cfg.Admin, cfg.Admin
		if old.Listen != new.Listen || old.TLSCert != new.TLSCert || old.TLSKey != new.TLSKey || old.MetricsAuth != new.MetricsAuth {
			c.log.Warn("admin listen, TLS and metrics_auth change on restart only; users were updated")
		}
		if c.admin != nil {
			c.admin.SetUsers(new.Users)
		}
	}
	c.enableSyncReceive(cfg)
	if err := c.configureSync(cfg.HA); err != nil {
		c.log.Error("reload: [ha] sync_peer not applied: nothing is pushed", zap.Error(err))
	}
	if err := c.reloadHA(cfg.HA); err != nil {
		c.log.Error("reload: [ha] not restarted", zap.Error(err))
	}
	c.cfg = cfg
	c.pushConfig()
	c.log.Info("configuration reloaded", zap.String("config", c.path))
	return nil
}

func (c *controller) grace() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Global.Grace
}
