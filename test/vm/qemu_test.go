package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeQEMU replaces qemu with a shell script for the test: the script sees
// qemu's arguments in "$@".
func fakeQEMU(t *testing.T, script string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := qemuPath
	qemuPath = p
	t.Cleanup(func() { qemuPath = old })
}

func TestBoot(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		status  int
		console []string // lines passed to Console
		wantErr string
		noInit  bool // the error is errNoInit
	}{
		{name: "exit status and console",
			script: `printf 'SeaBIOS\r\nFULCRUM-VM-INIT n1 0.9s\r\nPASS\r\n[ 2.1] reboot: FULCRUM-VM-EXIT n1 3\r\n'`,
			status: 3, console: []string{"SeaBIOS", "PASS"}},
		{name: "a marker with another nonce is console output",
			script:  `echo "FULCRUM-VM-INIT n1 1s"; echo "FULCRUM-VM-EXIT other 0"; echo "FULCRUM-VM-EXIT n1 0"`,
			console: []string{"FULCRUM-VM-EXIT other 0"}},
		{name: "kernel panic",
			script:  `echo "FULCRUM-VM-INIT n1 1s"; echo "Kernel panic - not syncing: Attempted to kill init!"`,
			wantErr: "the guest stopped before its exit marker", console: []string{"Kernel panic - not syncing: Attempted to kill init!"}},
		{name: "timeout",
			script: `echo "FULCRUM-VM-INIT n1 1s"; echo "running"; exec sleep 60`, timeout: 300 * time.Millisecond,
			wantErr: "timed out after 300ms", console: []string{"running"}},
		{name: "qemu fails",
			script:  `echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm" >&2; exit 1`,
			wantErr: "failed to initialize kvm", noInit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeQEMU(t, tt.script)
			var console []string
			res, err := Boot(context.Background(), BootOptions{
				Kernel: "vmlinuz", Initrd: "initrd", Nonce: "n1", Accel: "tcg", Timeout: tt.timeout,
				Console: func(l string) { console = append(console, l) },
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
				}
				if errors.Is(err, errNoInit) != tt.noInit {
					t.Errorf("errNoInit: %v, want %v", errors.Is(err, errNoInit), tt.noInit)
				}
				if !strings.Contains(err.Error(), "--- console tail ---") {
					t.Errorf("no console tail in %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if res.ExitStatus != tt.status || res.Accel != "tcg" || res.Boot <= 0 {
				t.Errorf("result %+v", res)
			}
			if !slices.Equal(console, tt.console) {
				t.Errorf("console lines %q, want %q", console, tt.console)
			}
		})
	}
}

// A KVM that hangs before /init (nested virtualization) or makes qemu fail
// is given up for TCG, once for the process.
func TestBootKVMFallback(t *testing.T) {
	for _, kvm := range []string{"exec sleep 60", `echo "kvm_buf_set_msrs: Assertion failed" >&2; kill -ABRT $$`} {
		fakeQEMU(t, `case "$*" in
*"-accel kvm"*) `+kvm+`;;
*) echo "FULCRUM-VM-INIT n1 1s"; echo "FULCRUM-VM-EXIT n1 0";;
esac`)
		oldDeadline, oldUsable := kvmInitDeadline, kvmUsable
		kvmInitDeadline, kvmUsable = 300*time.Millisecond, func() error { return nil }
		kvmBroken.broken = false
		var logs []string
		res, err := Boot(context.Background(), BootOptions{Nonce: "n1", Logf: func(f string, a ...any) { logs = append(logs, f) }})
		kvmInitDeadline, kvmUsable = oldDeadline, oldUsable
		if err != nil || res.Accel != "tcg" {
			t.Fatalf("%s: result %+v, %v; want a TCG boot", kvm, res, err)
		}
		if len(logs) != 1 || !strings.Contains(logs[0], "KVM did not boot the guest, falling back to TCG") {
			t.Errorf("%s: logs %q", kvm, logs)
		}
		if !kvmBroken.broken {
			t.Errorf("%s: KVM not remembered as broken", kvm)
		}
	}
	kvmBroken.broken = false
	t.Setenv("FULCRUM_VM_ACCEL", "hvf")
	if _, err := Boot(context.Background(), BootOptions{}); err == nil || !strings.Contains(err.Error(), `accelerator "hvf"`) {
		t.Errorf("bad accelerator: %v", err)
	}
}

func TestQEMUArgs(t *testing.T) {
	o := BootOptions{Kernel: "/k", Initrd: "/i"}
	got := strings.Join(QEMUArgs(o, "tcg"), " ")
	for _, want := range []string{"-accel tcg -cpu max", "-m 512 -smp 2", "-nodefaults", "-serial stdio", "-no-reboot",
		"-kernel /k -initrd /i", "console=ttyS0"} {
		if !strings.Contains(got, want) {
			t.Errorf("tcg args lack %q: %s", want, got)
		}
	}
	o.MemoryMiB, o.CPUs, o.Interactive = 1024, 1, true
	got = strings.Join(QEMUArgs(o, "kvm"), " ")
	for _, want := range []string{"-accel kvm -cpu host", "-m 1024 -smp 1", "-serial mon:stdio"} {
		if !strings.Contains(got, want) {
			t.Errorf("kvm args lack %q: %s", want, got)
		}
	}
}

func TestTail(t *testing.T) {
	var console strings.Builder
	for i := range 100 {
		fmt.Fprintf(&console, "line %d\n", i)
	}
	s := Tail([]byte(console.String()), []byte("qemu: boom\n"))
	if !strings.Contains(s, "[… 40 console lines before]\nline 40\n") || !strings.Contains(s, "line 99\n--- qemu-system-x86_64 stderr ---\nqemu: boom") {
		t.Errorf("Tail:\n%s", s)
	}
}
