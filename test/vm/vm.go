// Package vm runs a program (usually a `go test -c` binary) inside a
// throwaway virtual machine: Debian's kernel under qemu-system-x86_64, with a
// busybox initramfs that loads the kernel modules the program needs. It
// exists for the tests that need a kernel feature the machine running them
// lacks, as the l4 package's tests need IPVS.
//
// The pieces, each usable alone:
//
//   - FetchKernel: Debian's linux-image package, downloaded with `apt-get
//     download` and unpacked with `dpkg-deb -x` (never installed) into a cache
//     that survives between runs.
//   - ModuleTree.LoadOrder: the modules to insmod, dependencies first, from
//     each module's .modinfo (`modinfo -F depends`) or modules.dep.
//   - Initramfs.Write: a gzip-compressed newc cpio archive with busybox, the
//     modules, tools with their shared libraries (ldd), the program, and an
//     /init that runs it and prints its exit status.
//   - Boot: qemu with the console on the serial port, KVM when it works and
//     TCG otherwise, a timeout, and the console's tail on failure.
//
// Run ties them together.
package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// ErrMissing wraps the reasons a VM cannot be run on this machine at all (no
// qemu, no busybox): tests skip on it, outside CI.
var ErrMissing = errors.New("missing prerequisite")

// Config describes one run of a program in a VM.
type Config struct {
	// Program is the host path of the program to run; Args and Env (KEY=VALUE)
	// are its arguments and extra environment. /init also sets
	// FULCRUM_IN_VM=1.
	Program string
	Args    []string
	Env     []string
	// Modules are the kernel modules to load (by name, e.g. "ip_vs"); their
	// dependencies are added.
	Modules []string
	// Tools are commands copied into the guest, at their host paths, with
	// their shared libraries (e.g. "ipvsadm", "ip"); found in PATH.
	Tools []string
	// Files are more programs to copy, by guest path to host path (not under
	// /tmp, /run, /proc, /sys or /dev), with their shared libraries: e.g. a
	// program the test binary runs.
	Files map[string]string
	// Boot options: see BootOptions (Kernel, Initrd and Nonce are set by
	// Run).
	Boot BootOptions
	// Shell starts a shell on the console after the program; Boot.Interactive
	// should be set too.
	Shell bool
}

// Check reports, wrapping ErrMissing, what this machine lacks to run a VM.
func Check(tools ...string) error {
	var missing []string
	for _, t := range append([]string{QEMU, "busybox", "ldd"}, tools...) {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v not found (apt-get install qemu-system-x86 busybox-static, and the tools' packages)", ErrMissing, missing)
	}
	return nil
}

// Run fetches the kernel, builds the initramfs in a temporary directory and
// boots it.
func Run(ctx context.Context, cfg Config) (*BootResult, error) {
	logf := cfg.Boot.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := Check(cfg.Tools...); err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	k, err := FetchKernel(ctx, cache, logf)
	if err != nil {
		return nil, err
	}
	tree, err := OpenModuleTree(k.ModuleDir)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	order, err := tree.LoadOrder(cfg.Modules)
	if err != nil {
		return nil, fmt.Errorf("vm: %s: %w", k.Release, err)
	}
	spec := &Initramfs{Program: cfg.Program, Args: cfg.Args, Env: cfg.Env, Files: cfg.Files, Shell: cfg.Shell, Nonce: nonce()}
	if spec.Busybox, err = exec.LookPath("busybox"); err != nil {
		return nil, err
	}
	for _, m := range order {
		spec.Modules = append(spec.Modules, tree.Path(m))
	}
	for _, t := range cfg.Tools {
		p, err := exec.LookPath(t)
		if err != nil {
			return nil, err
		}
		if p, err = filepath.Abs(p); err != nil {
			return nil, err
		}
		spec.Tools = append(spec.Tools, p)
	}
	dir, err := os.MkdirTemp("", "fulcrum-vm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initramfs.cpio.gz")
	f, err := os.Create(initrd)
	if err != nil {
		return nil, err
	}
	if err := spec.Write(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	st, _ := os.Stat(initrd)
	logf("vm: kernel %s (%s=%s), modules %v, initramfs %.1f MiB, ready in %v",
		k.Release, k.Package, k.Version, order, float64(st.Size())/(1<<20), time.Since(start).Round(time.Millisecond))
	o := cfg.Boot
	o.Kernel, o.Initrd, o.Nonce = k.Image, initrd, spec.Nonce
	return Boot(ctx, o)
}

func nonce() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
