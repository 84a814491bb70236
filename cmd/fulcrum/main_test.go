package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("[[virtual_service]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n  [[virtual_service.real_server]]\n  address = \"127.0.0.1:9001\"\n"), 0o644)
	os.WriteFile(bad, []byte("[[virtual_service]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\nsheduler = \"x\"\n"), 0o644)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"no command", nil, 2, "", "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"help", []string{"-h"}, 0, "fulcrum check -c PATH", ""},
		{"version", []string{"version"}, 0, "fulcrum dev", ""},
		{"check ok", []string{"check", "-c", good}, 0, good + ": OK", ""},
		{"check bad", []string{"check", "-c", bad}, 1, bad + ":4: virtual_service.sheduler: unknown key", ""},
		{"check every problem", []string{"check", "-c", bad}, 1, bad + ":1: virtual_service.real_server: virtual service has no real servers", ""},
		{"check missing file", []string{"check", "-c", filepath.Join(dir, "nope.toml")}, 1, "no such file", ""},
		{"check without -c", []string{"check"}, 2, "", "-c PATH is required"},
		{"check -h", []string{"check", "-h"}, 0, "", "Usage: fulcrum check -c PATH"},
		{"run -h", []string{"run", "-h"}, 0, "", "Usage: fulcrum run -c PATH"},
		{"run bad config", []string{"run", "-c", bad}, 1, "", "unknown key"},
		{"run stray argument", []string{"run", "-c", good, "extra"}, 2, "", `unexpected argument "extra"`},
		{"demo -h", []string{"demo", "-h"}, 0, "", "-print-config"},
		{"demo -print-config", []string{"demo", "-print-config"}, 0, `name = "demo"`, ""},
		{"version -h", []string{"version", "-h"}, 0, "", "Usage: fulcrum version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
