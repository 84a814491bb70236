package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/fulcrumlb/fulcrum/config"
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

// configPath parses the flags of a command taking "-c PATH"; ok is false
// with the exit code when the command should not go on.
func configPath(name string, args []string, stderr io.Writer) (path string, code int, ok bool) {
	fs := newFlags(name, name+" -c PATH", stderr)
	fs.StringVar(&path, "c", "", "configuration file (required)")
	if code, ok := parseFlags(fs, args); !ok {
		return "", code, false
	}
	if path == "" {
		fmt.Fprintf(stderr, "fulcrum %s: -c PATH is required\n", name)
		fs.Usage()
		return "", 2, false
	}
	return path, 0, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, code, ok := configPath("check", args, stderr)
	if !ok {
		return code
	}
	if _, err := config.Load(path); err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", path)
	return 0
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	path, code, ok := configPath("run", args, stderr)
	if !ok {
		return code
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return serve(cfg, path, stderr, nil)
}
