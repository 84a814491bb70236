package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "version", stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		fmt.Fprintf(stdout, "fulcrum %s %s\n", v, bi.GoVersion)
		return 0
	}
	fmt.Fprintf(stdout, "fulcrum %s\n", v)
	return 0
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "check -c PATH", stderr)
	path := fs.String("c", "", "configuration file to validate (required)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *path == "" {
		fmt.Fprintln(stderr, "fulcrum check: -c PATH is required")
		fs.Usage()
		return 2
	}
	if _, err := config.Load(*path); err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", *path)
	return 0
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "run -c PATH", stderr)
	path := fs.String("c", "", "configuration file (required)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *path == "" {
		fmt.Fprintln(stderr, "fulcrum run: -c PATH is required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return serve(cfg, stderr, nil)
}

// serve runs the proxy for cfg until SIGTERM or SIGINT, then stops
// gracefully within global.grace. ready, if not nil, is called once every
// listener is bound.
func serve(cfg *config.Config, stderr io.Writer, ready func()) int {
	log, err := newLogger(cfg.Global, stderr)
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
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	if err := p.Start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	log.Info("fulcrum started", zap.String("version", version), zap.String("config", cfg.File))
	if ready != nil {
		ready()
	}
	s := <-sig
	log.Info("stopping: finishing in-flight requests", zap.Stringer("signal", s), zap.Duration("grace", cfg.Global.Grace))
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Global.Grace)
	defer cancel()
	go func() { // a second signal stops at once
		select {
		case <-sig:
			log.Warn("second signal: stopping now")
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := p.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		log.Warn("grace period over: remaining connections closed")
	}
	log.Info("fulcrum stopped")
	return 0
}
