package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// QEMU is the emulator the harness runs (Debian package qemu-system-x86).
const QEMU = "qemu-system-x86_64"

// BootOptions describe one boot of a kernel with an initramfs made by
// Initramfs.Write.
type BootOptions struct {
	Kernel string // host path of the kernel image
	Initrd string // host path of the initramfs
	Nonce  string // the Initramfs's Nonce
	// Accel is "kvm", "tcg" or "" (auto: KVM if /dev/kvm opens and the
	// guest starts under it, else TCG). If empty, $FULCRUM_VM_ACCEL.
	Accel string
	// MemoryMiB is the guest's memory. If zero, 512.
	MemoryMiB int
	// CPUs is the number of guest CPUs. If zero, 2.
	CPUs int
	// Timeout bounds the whole boot, from qemu's start to the exit marker.
	// If zero, 4 minutes.
	Timeout time.Duration
	// Console receives the guest's console output as it comes, line by
	// line, without the markers. If nil, it is discarded.
	Console func(line string)
	// Logf reports the harness's own steps (the KVM fallback). If nil, they
	// are discarded.
	Logf func(format string, args ...any)
	// Interactive connects the console to this process's terminal (for a
	// shell in the guest): its output is copied there as it comes, not
	// passed to Console.
	Interactive bool
}

// BootResult is what a boot produced.
type BootResult struct {
	// ExitStatus is the program's exit status that /init printed.
	ExitStatus int
	// Accel is the accelerator the guest ran under: "kvm" or "tcg".
	Accel string
	// Boot is the time from qemu's start to /init's first line; Total to
	// the exit marker.
	Boot, Total time.Duration
	// Console is the guest's console output (markers included, "\r"
	// removed); QEMUStderr is qemu's own error output.
	Console, QEMUStderr []byte
}

// errNoInit means the guest never reached /init: under KVM, the harness
// then falls back to TCG.
var errNoInit = errors.New("the guest did not reach /init")

// kvmInitDeadline is how long a KVM guest has to reach /init (about 1 s
// when KVM works) before the harness calls KVM broken: nested KVM can hang
// in the kernel's first instructions rather than fail. A variable for the
// tests, as are qemuPath and kvmUsable.
var kvmInitDeadline = 30 * time.Second

var qemuPath = QEMU

// powerOffGrace is how long qemu may take to exit after the exit marker.
const powerOffGrace = 15 * time.Second

// kvmBroken remembers, for this process, that KVM did not boot a guest, so
// that later boots go straight to TCG.
var kvmBroken struct {
	sync.Mutex
	broken bool
}

// Boot runs qemu until the guest's /init prints its exit marker and powers
// off, and returns the program's exit status. It fails, with the tail of the
// console, when qemu fails, when the timeout passes, or when the guest
// stops without the marker (a kernel panic, a missing module).
func Boot(ctx context.Context, o BootOptions) (*BootResult, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	accel := o.Accel
	if accel == "" {
		accel = os.Getenv("FULCRUM_VM_ACCEL")
	}
	switch accel {
	case "kvm", "tcg":
		return boot(ctx, o, accel)
	case "", "auto":
	default:
		return nil, fmt.Errorf("vm: accelerator %q: want kvm, tcg or auto", accel)
	}
	kvmBroken.Lock()
	broken := kvmBroken.broken
	kvmBroken.Unlock()
	if !broken {
		if err := kvmUsable(); err != nil {
			o.Logf("vm: no KVM (%v): using TCG, a few times slower", err)
		} else {
			res, err := boot(ctx, o, "kvm")
			if !errors.Is(err, errNoInit) {
				return res, err
			}
			why, _, _ := strings.Cut(err.Error(), "\n")
			if e := lastLine(res.QEMUStderr); e != "" {
				why += ": " + e
			}
			o.Logf("vm: KVM did not boot the guest, falling back to TCG (%s)", why)
			kvmBroken.Lock()
			kvmBroken.broken = true
			kvmBroken.Unlock()
		}
	}
	return boot(ctx, o, "tcg")
}

var kvmUsable = func() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// QEMUArgs returns qemu's command line for a boot under accel.
func QEMUArgs(o BootOptions, accel string) []string {
	mem, cpus := o.MemoryMiB, o.CPUs
	if mem == 0 {
		mem = 512
	}
	if cpus == 0 {
		cpus = 2
	}
	// KVM runs the host's CPU model; TCG emulates "max", every feature it
	// implements (SSE4.2 for crc32c, RDRAND to seed the kernel's RNG).
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	serial := "stdio"
	if o.Interactive {
		serial = "mon:stdio" // Ctrl-A x quits, Ctrl-A c is qemu's monitor
	}
	return []string{
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		// No default devices (VGA, NIC, floppy): the tests make their own
		// network with veth pairs inside the guest.
		"-nodefaults", "-display", "none", "-serial", serial,
		// A guest reboot or panic (panic=-1) ends qemu instead of looping.
		"-no-reboot",
		"-kernel", o.Kernel, "-initrd", o.Initrd,
		"-append", "console=ttyS0 quiet panic=-1 oops=panic",
	}
}

func boot(ctx context.Context, o BootOptions, accel string) (*BootResult, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("timed out after %v", timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuPath, QEMUArgs(o, accel)...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	res := &BootResult{ExitStatus: -1, Accel: accel}
	m := newMarkers(o.Nonce)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stdout io.Reader = pipe
	if o.Interactive {
		// The console is this terminal (qemu puts it in raw mode); the
		// output is still read for the markers.
		cmd.Stdin = os.Stdin
		stdout = io.TeeReader(pipe, os.Stdout)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vm: %s: %w", qemuPath, err)
	}
	var noInit *time.Timer
	if accel == "kvm" {
		noInit = time.AfterFunc(kvmInitDeadline, func() {
			if !m.sawInit() {
				cancel()
			}
		})
		defer noInit.Stop()
	}
	var console bytes.Buffer
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		console.WriteString(line)
		console.WriteByte('\n')
		switch m.line(line) {
		case markerInit:
			res.Boot = time.Since(start)
		case markerExit:
			res.ExitStatus = m.status
			// poweroff -f takes a moment; a guest stuck in it must not
			// hold the run until the timeout.
			stuck := time.AfterFunc(powerOffGrace, cancel)
			defer stuck.Stop()
		default:
			if o.Console != nil && !o.Interactive {
				o.Console(line)
			}
		}
	}
	werr := cmd.Wait()
	res.Total = time.Since(start)
	res.Console, res.QEMUStderr = console.Bytes(), stderr.Bytes()
	switch {
	case m.exited:
		// The status is the program's: qemu itself may report the end of
		// the guest as an error (killed by WaitDelay), which is fine here.
		return res, nil
	case !m.sawInit():
		why := "qemu exited"
		if werr != nil {
			why = fmt.Sprintf("qemu: %v", werr)
		}
		if c := context.Cause(ctx); c != nil {
			why = c.Error()
			if accel == "kvm" && ctx.Err() != nil && res.Total < timeout {
				why = fmt.Sprintf("no /init after %v", kvmInitDeadline)
			}
		}
		return res, fmt.Errorf("vm: %s (%s): %w\n%s", why, accel, errNoInit, Tail(res.Console, stderr.Bytes()))
	}
	why := "the guest stopped before its exit marker (kernel panic? see the console)"
	if c := context.Cause(ctx); c != nil {
		why = c.Error()
	}
	return res, fmt.Errorf("vm: %s (%s, %v)\n%s", why, accel, res.Total.Round(time.Millisecond), Tail(res.Console, stderr.Bytes()))
}

// Tail returns the end of the console and qemu's standard error, for
// failure messages.
func Tail(console, stderr []byte) string {
	const max = 60
	lines := strings.Split(strings.TrimRight(string(console), "\n"), "\n")
	if len(lines) > max {
		lines = append([]string{fmt.Sprintf("[… %d console lines before]", len(lines)-max)}, lines[len(lines)-max:]...)
	}
	s := "--- console tail ---\n" + strings.Join(lines, "\n")
	if e := strings.TrimSpace(string(stderr)); e != "" {
		s += "\n--- " + QEMU + " stderr ---\n" + e
	}
	return s
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// markers recognizes /init's two lines, "FULCRUM-VM-INIT NONCE …" and
// "FULCRUM-VM-EXIT NONCE STATUS", anywhere in a console line (a kernel
// message can share the line). The nonce keeps a program that prints the
// marker text (this package's own tests) from faking them.
type markers struct {
	init, exit *regexp.Regexp
	mu         sync.Mutex
	inited     bool
	exited     bool
	status     int
}

type marker int

const (
	markerNone marker = iota
	markerInit
	markerExit
)

func newMarkers(nonce string) *markers {
	q := regexp.QuoteMeta(nonce)
	return &markers{
		init: regexp.MustCompile(`FULCRUM-VM-INIT ` + q + `\b`),
		exit: regexp.MustCompile(`FULCRUM-VM-EXIT ` + q + ` (\d+)`),
	}
}

func (m *markers) line(s string) marker {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.init.MatchString(s) {
		m.inited = true
		return markerInit
	}
	if sub := m.exit.FindStringSubmatch(s); sub != nil {
		m.exited = true
		m.status, _ = strconv.Atoi(sub[1])
		return markerExit
	}
	return markerNone
}

func (m *markers) sawInit() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inited
}
