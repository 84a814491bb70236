package l4

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/test/vm"
)

// The tests named TestVM* need a kernel with IPVS, which the machines that
// run Fulcrum's tests lack: TestInVM runs them in a VM (see test/vm), where
// /init sets FULCRUM_IN_VM=1. By hand:
//
//	go test -run TestInVM -v ./l4
//
// FULCRUM_VM_RUN=REGEXP picks the inner tests (default: all),
// FULCRUM_VM_ACCEL=tcg forces TCG, FULCRUM_VM_REQUIRE=1 (set by .ci/run)
// fails instead of skipping when qemu or a tool is missing.

// vmModules are the kernel modules the inner tests need: IPVS and its
// schedulers, ipip for tun real servers' tunl0, veth for the namespaces'
// links, bridge for the real servers' shared link.
var vmModules = []string{
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_mh",
	"ipip", "veth", "bridge",
}

// vmTools are copied into the VM: Debian's ipvsadm to compare with, and
// iproute2's ip for network namespaces (busybox's ip has no netns).
var vmTools = []string{"ipvsadm", "ip"}

// vmTimeout bounds the boot and the inner tests: about 40 s under TCG on
// two cores, 4 minutes leaves room for a loaded CI machine.
const vmTimeout = 4 * time.Minute

func TestInVM(t *testing.T) {
	if inVM() {
		t.Skip("already inside the VM")
	}
	if testing.Short() {
		t.Skip("boots a VM (about 40 s under TCG): not in -short mode")
	}
	required := os.Getenv("FULCRUM_VM_REQUIRE") == "1"
	skip := func(format string, args ...any) {
		t.Helper()
		if required {
			t.Fatalf("FULCRUM_VM_REQUIRE=1: "+format, args...)
		}
		t.Skipf(format, args...)
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		skip("the VM harness boots Debian's amd64 kernel: needs linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if err := vm.Check(vmTools...); err != nil {
		skip("%v", err)
	}

	// The inner test binary: static (no C library in the VM) and without
	// the race detector (cgo), whatever flags run this test.
	bin := filepath.Join(t.TempDir(), "l4.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	// The fulcrum binary, for TestVMFulcrumBinary: static too.
	fulcrum := filepath.Join(t.TempDir(), "fulcrum")
	build = exec.Command("go", "build", "-o", fulcrum, "github.com/fulcrumlb/fulcrum/cmd/fulcrum")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fulcrum: %v\n%s", err, out)
	}
	run := os.Getenv("FULCRUM_VM_RUN")
	if run == "" {
		run = "."
	}
	ctx, cancel := context.WithTimeout(context.Background(), vmTimeout+time.Minute)
	defer cancel()
	var inner strings.Builder
	res, err := vm.Run(ctx, vm.Config{
		Program: bin,
		Args:    []string{"-test.v", "-test.count=1", "-test.run=" + run, "-test.timeout=" + (vmTimeout - 30*time.Second).String()},
		Modules: vmModules,
		Tools:   vmTools,
		Files:   map[string]string{fulcrumGuestPath: fulcrum},
		Boot: vm.BootOptions{
			Timeout: vmTimeout,
			Console: func(line string) {
				inner.WriteString(line + "\n")
				t.Log("vm: " + line)
			},
			Logf: t.Logf,
		},
	})
	if errors.Is(err, vm.ErrMissing) {
		skip("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("VM under %s: /init after %v, inner tests done after %v", res.Accel, res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond))
	if res.ExitStatus != 0 {
		t.Fatalf("the tests inside the VM failed (exit status %d): see their output above", res.ExitStatus)
	}
	// Inside the VM nothing may skip for want of the VM: the harness would
	// then pass without testing anything.
	if n := strings.Count(inner.String(), "--- PASS: TestVM"); n == 0 {
		t.Fatalf("no TestVM* test passed inside the VM (FULCRUM_VM_RUN=%q?)", run)
	}
	if strings.Contains(inner.String(), "runs inside the VM via TestInVM") {
		t.Fatal("an inner test skipped inside the VM as if outside it")
	}
}

// inVM reports whether this process runs inside the test VM.
func inVM() bool { return os.Getenv("FULCRUM_IN_VM") == "1" }

// needVM skips a test that needs the VM's kernel when not inside it.
func needVM(t *testing.T) {
	t.Helper()
	if !inVM() {
		t.Skip("needs a kernel with IPVS: runs inside the VM via TestInVM")
	}
}

// TestNewWithoutIPVS checks the message on a kernel without IPVS: the
// machine running the tests, outside the VM.
func TestNewWithoutIPVS(t *testing.T) {
	if inVM() {
		t.Skip("the VM's kernel has IPVS")
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has IPVS loaded")
	}
	_, err := New()
	if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "the kernel has no IPVS (ip_vs module): load it with `modprobe ip_vs`") {
		t.Fatalf("New on a kernel without IPVS: %v, want ErrNoIPVS", err)
	}
}

func TestMain(m *testing.M) {
	// A child started by TestVMPermission (as an unprivileged user) reports
	// New's error.
	if os.Getenv("FULCRUM_L4_CHILD") == "new" {
		_, err := New()
		fmt.Println(err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
