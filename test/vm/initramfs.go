package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Guest paths of what the initramfs holds besides the tools.
const (
	guestProgram = "/bin/fulcrum-vm-program"
	guestArgs    = "/etc/fulcrum-vm/args"
	guestEnv     = "/etc/fulcrum-vm/env"
	guestModules = "/etc/fulcrum-vm/modules"
	guestModDir  = "/lib/modules/fulcrum-vm"
)

// mountedOver are the top directories /init mounts a file system on, which
// hide what the initramfs holds there.
var mountedOver = []string{"proc", "sys", "dev", "tmp", "run"}

// Initramfs describes the guest's whole file system: busybox, the kernel
// modules to load, tools with their shared libraries, and the program /init
// runs.
type Initramfs struct {
	// Busybox is the host path of busybox (Debian's busybox-static); each of
	// its applets becomes a symlink in /bin. If dynamically linked, its
	// libraries are copied too.
	Busybox string
	// Modules are the host paths of the kernel modules, in load order
	// (ModuleTree.LoadOrder). Compressed ones are decompressed.
	Modules []string
	// Tools are host paths of programs copied to the same path in the guest
	// with the shared libraries and the dynamic loader ldd names.
	Tools []string
	// Files are more programs to copy, by guest path (e.g. /usr/bin/fulcrum)
	// to host path, with their shared libraries as for Tools. A guest path
	// must not be under /tmp, /run, /proc, /sys or /dev, which /init mounts
	// over.
	Files map[string]string
	// Program is the host path of the program /init runs (a `go test -c`
	// binary), with Args and Env (KEY=VALUE) added to /init's environment.
	Program string
	Args    []string
	Env     []string
	// Nonce makes /init's markers unique to one boot (see Boot).
	Nonce string
	// Shell makes /init start a shell on the console after the program
	// (for debugging: see cmd/vmshell) instead of powering off.
	Shell bool
}

// Write writes the initramfs, a gzip-compressed newc cpio archive.
func (s *Initramfs) Write(w io.Writer) error {
	zw := newGzip(w)
	c := NewCPIOWriter(zw)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "root", "etc/fulcrum-vm", "usr/sbin", "usr/bin", "sbin", guestModDir} {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := s.addBusybox(c); err != nil {
		return err
	}
	var order []string
	for _, m := range s.Modules {
		ko, err := ReadModule(m)
		if err != nil {
			return fmt.Errorf("vm: module %w", err)
		}
		name := ModuleName(m)
		if err := c.File(path.Join(guestModDir, name+".ko"), 0o644, ko); err != nil {
			return err
		}
		order = append(order, name)
	}
	if err := c.File(guestModules, 0o644, lines(order)); err != nil {
		return err
	}
	for _, t := range s.Tools {
		if err := addELF(c, t, t); err != nil {
			return err
		}
	}
	for _, dst := range slices.Sorted(maps.Keys(s.Files)) {
		if !path.IsAbs(dst) || slices.Contains(mountedOver, strings.Split(dst, "/")[1]) {
			return fmt.Errorf("vm: file %s: want an absolute guest path outside %v", dst, mountedOver)
		}
		if err := addELF(c, s.Files[dst], dst); err != nil {
			return err
		}
	}
	if s.Program != "" {
		if err := addELF(c, s.Program, guestProgram); err != nil {
			return err
		}
	}
	for _, a := range s.Args {
		if strings.ContainsAny(a, "\n\x00") {
			return fmt.Errorf("vm: program argument %q has a newline or NUL", a)
		}
	}
	if err := c.File(guestArgs, 0o644, lines(s.Args)); err != nil {
		return err
	}
	env, err := shellExports(s.Env)
	if err != nil {
		return err
	}
	if err := c.File(guestEnv, 0o644, env); err != nil {
		return err
	}
	if err := c.File("init", 0o755, []byte(InitScript(s.Nonce, s.Program != "", s.Shell))); err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func (s *Initramfs) addBusybox(c *CPIOWriter) error {
	if s.Busybox == "" {
		return fmt.Errorf("vm: no busybox")
	}
	if err := addELF(c, s.Busybox, "/bin/busybox"); err != nil {
		return err
	}
	out, err := exec.Command(s.Busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("vm: %s --list: %w", s.Busybox, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := c.Symlink("bin/"+applet, "busybox"); err != nil {
			return err
		}
	}
	return nil
}

// InitScript returns /init: mount the pseudo file systems, load the modules
// in order, run the program with the arguments of guestArgs, print
// "FULCRUM-VM-EXIT NONCE STATUS" on the console and power off. The first
// line it prints, "FULCRUM-VM-INIT NONCE", tells the host that the kernel
// booted (Boot's KVM fallback waits for it).
func InitScript(nonce string, program, shell bool) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
`)
	fmt.Fprintf(&b, "echo \"FULCRUM-VM-INIT %s $(cut -d' ' -f1 /proc/uptime)s\"\n", nonce)
	fmt.Fprintf(&b, `while read -r m; do
	insmod %s/$m.ko || echo "FULCRUM-VM: insmod $m failed"
done < %s
ip link set lo up
. %s
export FULCRUM_IN_VM=1
`, guestModDir, guestModules, guestEnv)
	if program {
		fmt.Fprintf(&b, `set --
while IFS= read -r a; do set -- "$@" "$a"; done < %s
cd /tmp
%s "$@"
rc=$?
`, guestArgs, guestProgram)
	} else {
		b.WriteString("rc=0\n")
	}
	if shell {
		if program {
			b.WriteString(`echo "FULCRUM-VM: the program exited with status $rc"` + "\n")
		}
		b.WriteString(`echo "FULCRUM-VM: a shell on the console; exit or Ctrl-D powers off"
setsid cttyhack sh
`)
	}
	fmt.Fprintf(&b, `echo "FULCRUM-VM-EXIT %s $rc"
sync
poweroff -f
`, nonce)
	return b.String()
}

// shellExports turns KEY=VALUE pairs into "export KEY='VALUE'" lines for
// /init to source.
func shellExports(env []string) ([]byte, error) {
	var b bytes.Buffer
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n'\"$=;&|") {
			return nil, fmt.Errorf("vm: bad environment entry %q: want KEY=VALUE", kv)
		}
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	return b.Bytes(), nil
}

func lines(ss []string) []byte {
	var b bytes.Buffer
	for _, s := range ss {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// addELF copies the program at host path src to guest path dst and, if it
// is dynamically linked (it has a PT_INTERP program header), the libraries
// and the loader that ldd lists, each at the path ldd gives (the loader's
// path is compiled into the program).
func addELF(c *CPIOWriter, src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	if err := c.File(dst, 0o755, data); err != nil {
		return err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("vm: %s: not an ELF program: %w", src, err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	if !dynamic {
		return nil
	}
	out, err := exec.CommandContext(context.Background(), "ldd", src).Output()
	if err != nil {
		return fmt.Errorf("vm: ldd %s: %w", src, err)
	}
	libs, err := ParseLdd(out)
	if err != nil {
		return fmt.Errorf("vm: ldd %s: %w", src, err)
	}
	for _, lib := range libs {
		if c.Has(lib) {
			continue
		}
		// Copy the file a symlink chain ends at, under the name ldd gave.
		real, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return fmt.Errorf("vm: %s needs %s: %w", src, lib, err)
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		if err := c.File(lib, 0o755, b); err != nil {
			return err
		}
	}
	return nil
}

// ParseLdd returns the library paths in ldd's output: "name => /path
// (0x…)" lines and the loader's "/lib64/ld-linux-x86-64.so.2 (0x…)". The
// vDSO, which the kernel provides, has no path.
func ParseLdd(out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "", strings.Contains(line, "statically linked"), strings.Contains(line, "not a dynamic executable"):
			continue
		case strings.Contains(line, "=> not found"):
			return nil, fmt.Errorf("missing library: %s", line)
		}
		if _, rest, ok := strings.Cut(line, "=>"); ok {
			line = strings.TrimSpace(rest)
		}
		if p := strings.Fields(line); len(p) > 0 && strings.HasPrefix(p[0], "/") {
			libs = append(libs, p[0])
		}
	}
	return libs, sc.Err()
}

// newGzip compresses the archive at the default level: the kernel
// decompresses it at every boot (slowly under TCG), so a smaller archive
// pays back the few hundred milliseconds more it takes to build.
func newGzip(w io.Writer) *gzip.Writer { return gzip.NewWriter(w) }
