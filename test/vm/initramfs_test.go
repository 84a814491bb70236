package vm

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseLdd(t *testing.T) {
	// ldd /usr/sbin/ipvsadm on Debian 12.
	const out = `	linux-vdso.so.1 (0x00007ffc4a5f2000)
	libpopt.so.0 => /lib/x86_64-linux-gnu/libpopt.so.0 (0x00007f3acf585000)
	libnl-genl-3.so.200 => /lib/x86_64-linux-gnu/libnl-genl-3.so.200 (0x00007f3acf57e000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3acf379000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f3acf5bf000)
`
	got, err := ParseLdd([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libpopt.so.0", "/lib/x86_64-linux-gnu/libnl-genl-3.so.200",
		"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if libs, err := ParseLdd([]byte("\tstatically linked\n")); err != nil || len(libs) != 0 {
		t.Errorf("static: %v, %v", libs, err)
	}
	if _, err := ParseLdd([]byte("\tlibnl-3.so.200 => not found\n")); err == nil {
		t.Error("missing library: no error")
	}
}

func TestParseApt(t *testing.T) {
	depends := []byte("linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n")
	if got := ParseAptDepends(depends, "linux-image-"); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("ParseAptDepends = %q", got)
	}
	if got := ParseAptDepends([]byte("linux-image-amd64\n"), "linux-image-"); got != "" {
		t.Errorf("ParseAptDepends without lists = %q", got)
	}
	policy := []byte("linux-image-6.1.0-56-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n")
	if got := ParseAptCandidate(policy); got != "6.1.192-2" {
		t.Errorf("ParseAptCandidate = %q", got)
	}
	if got := ParseAptCandidate([]byte("x:\n  Installed: (none)\n  Candidate: (none)\n")); got != "" {
		t.Errorf("ParseAptCandidate of none = %q", got)
	}
}

// The environment file survives the shell's quoting.
func TestShellExports(t *testing.T) {
	env := []string{"A=plain", "B=it's \"quoted\" $HOME `x`", "C="}
	b, err := shellExports(env)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "env")
	os.WriteFile(f, b, 0o644)
	out, err := exec.Command("sh", "-c", `. "$1"; printf '%s|%s|%s' "$A" "$B" "$C"`, "sh", f).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "plain|it's \"quoted\" $HOME `x`|"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	for _, bad := range []string{"NOEQUALS", "=v", "A B=c", "$(x)=1"} {
		if _, err := shellExports([]string{bad}); err == nil {
			t.Errorf("shellExports(%q): no error", bad)
		}
	}
}

func TestInitScript(t *testing.T) {
	s := InitScript("n0nce", true, false)
	for _, want := range []string{
		"#!/bin/sh\n",
		"mount -t devtmpfs devtmpfs /dev\n",
		`echo "FULCRUM-VM-INIT n0nce`,
		"insmod /lib/modules/fulcrum-vm/$m.ko",
		"done < /etc/fulcrum-vm/modules\n",
		"export FULCRUM_IN_VM=1\n",
		`/bin/fulcrum-vm-program "$@"`,
		`echo "FULCRUM-VM-EXIT n0nce $rc"`,
		"poweroff -f\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("/init lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "cttyhack") {
		t.Error("/init starts a shell without Shell")
	}
	if s := InitScript("n", false, true); !strings.Contains(s, "setsid cttyhack sh") || strings.Contains(s, "fulcrum-vm-program") {
		t.Errorf("shell-only /init:\n%s", s)
	}
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Errorf("sh -n /init: %v\n%s", err, out)
	}
}

// A whole initramfs with the host's busybox and a dynamically linked tool:
// the libraries and the loader come along.
func TestInitramfsWrite(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox (apt-get install busybox-static)")
	}
	tool, _ := exec.LookPath("sh")
	if tool == "" {
		t.Skip("needs sh")
	}
	tool, _ = filepath.EvalSymlinks(tool)
	var z bytes.Buffer
	spec := &Initramfs{Busybox: busybox, Tools: []string{tool}, Program: tool, Args: []string{"-c", "echo hi"}, Env: []string{"X=1"}, Nonce: "abc",
		Files: map[string]string{"/usr/bin/extra": tool}}
	if err := spec.Write(&z); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&z)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	files := map[string]cpioEntry{}
	for _, e := range readCPIO(t, raw) {
		files[e.name] = e
	}
	for _, name := range []string{"init", "bin/busybox", "bin/sh", "bin/insmod", "bin/poweroff", "bin/fulcrum-vm-program", "usr/bin/extra",
		strings.TrimPrefix(tool, "/"), "etc/fulcrum-vm/args", "etc/fulcrum-vm/env", "etc/fulcrum-vm/modules", "proc", "run"} {
		if _, ok := files[name]; !ok {
			t.Errorf("initramfs lacks %s", name)
		}
	}
	if e := files["bin/sh"]; e.mode&0o170000 != cpioSymlink || e.data != "busybox" {
		t.Errorf("bin/sh: %+v", e)
	}
	if got := files["etc/fulcrum-vm/args"].data; got != "-c\necho hi\n" {
		t.Errorf("args file %q", got)
	}
	// sh is dynamically linked on Debian: its C library and loader must be
	// there.
	out, _ := exec.Command("ldd", tool).Output()
	libs, _ := ParseLdd(out)
	for _, l := range libs {
		if _, ok := files[strings.TrimPrefix(l, "/")]; !ok {
			t.Errorf("initramfs lacks %s, which %s needs", l, tool)
		}
	}
	if err := (&Initramfs{Busybox: busybox, Args: []string{"a\nb"}}).Write(io.Discard); err == nil {
		t.Error("an argument with a newline: no error")
	}
	for _, dst := range []string{"/tmp/x", "usr/bin/x", "/run/x"} {
		if err := (&Initramfs{Busybox: busybox, Files: map[string]string{dst: tool}}).Write(io.Discard); err == nil {
			t.Errorf("file at %s: no error", dst)
		}
	}
}
