package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// l4Config is a dr service beside an http one. The VIP is a documentation
// address: this test must never program a kernel's IPVS.
const l4Config = `[[virtual_service]]
name = "rdp-dr"
listen = "192.0.2.30:3389"
mode = "dr"
scheduler = "wlc"
persistence = { method = "source_ip", timeout = "2h" }
health_check = { type = "none" }
real_server = [{ name = "ts1", address = "192.0.2.41:3389" }]

[[virtual_service]]
name = "web"
listen = "127.0.0.1:%PORT%"
real_server = [{ address = "127.0.0.1:1" }]
`

// TestL4WithoutIPVS: fulcrum check accepts an L4 configuration without
// IPVS (pure validation), and fulcrum run refuses it on a kernel without
// IPVS, saying why and how to fix it, and leaves nothing listening. The
// IPVS VM test (test/vm) runs the binary where IPVS exists.
func TestL4WithoutIPVS(t *testing.T) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has IPVS loaded: the test is for one without (the VM test covers IPVS)")
	}
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	file := filepath.Join(t.TempDir(), "l4.toml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(l4Config, "%PORT%", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "check", "-c", file)
	if code != 0 || stdout != file+": OK\n" {
		t.Fatalf("check: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, "run", "-c", file)
	out := stdout + stderr
	if code == 0 || !strings.Contains(out, `virtual service \"rdp-dr\": mode dr needs the kernel's IPVS`) ||
		!strings.Contains(out, "modprobe ip_vs") && !strings.Contains(out, "CAP_NET_ADMIN") {
		t.Errorf("run: exit %d, want non-zero with the cause and the fix; output:\n%s", code, out)
	}
	if isListening(t, addr) {
		t.Errorf("%s is listening after a refused start", addr)
	}
}
