package l4

import (
	"bufio"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// parseIPVSADM reads `ipvsadm -Ln` into one entry per virtual service, keyed
// by "PROT ADDRESS:PORT" (or "FWM MARK"): the service line with its
// whitespace collapsed, then its real servers as "-> ADDRESS:PORT FORWARD
// WEIGHT" (connection counts dropped), sorted. An independent reading of the
// kernel's state: ipvsadm talks to it with libnl, not with our library.
func parseIPVSADM(out string) (map[string][]string, error) {
	svcs := map[string][]string{}
	var cur string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0, f[0] == "IP" && len(f) > 1 && f[1] == "Virtual", f[0] == "Prot",
			len(f) > 1 && f[0] == "->" && f[1] == "RemoteAddress:Port":
			continue
		case f[0] == "->":
			if cur == "" || len(f) < 4 {
				return nil, fmt.Errorf("ipvsadm: real server line before a service or short: %q", sc.Text())
			}
			svcs[cur] = append(svcs[cur], strings.Join(f[:4], " "))
		case f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP" || f[0] == "FWM":
			if len(f) < 3 {
				return nil, fmt.Errorf("ipvsadm: short service line %q", sc.Text())
			}
			cur = f[0] + " " + f[1]
			svcs[cur] = []string{strings.Join(f, " ")}
		default:
			return nil, fmt.Errorf("ipvsadm: unexpected line %q", sc.Text())
		}
	}
	for k, lines := range svcs {
		slices.Sort(lines[1:])
		svcs[k] = lines
	}
	return svcs, sc.Err()
}

// ipvsadm runs `ipvsadm -Ln` and parses it.
func ipvsadm(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("ipvsadm", "-Ln").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -Ln: %v\n%s", err, out)
	}
	svcs, err := parseIPVSADM(string(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return svcs
}

func TestParseIPVSADM(t *testing.T) {
	// ipvsadm 1.31's output for services like those of the VM tests.
	const out = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  203.0.113.30:3389 wlc persistent 7200 mask 255.255.255.0
  -> 192.0.2.42:3389              Route   2      0          0
  -> 192.0.2.41:3389              Route   1      3          1
UDP  [2001:db8::30]:53 mh
  -> [2001:db8::41]:53            Masq    1      0          0
FWM  7 rr
`
	got, err := parseIPVSADM(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"TCP 203.0.113.30:3389": {
			"TCP 203.0.113.30:3389 wlc persistent 7200 mask 255.255.255.0",
			"-> 192.0.2.41:3389 Route 1",
			"-> 192.0.2.42:3389 Route 2",
		},
		"UDP [2001:db8::30]:53": {"UDP [2001:db8::30]:53 mh", "-> [2001:db8::41]:53 Masq 1"},
		"FWM 7":                 {"FWM 7 rr"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	for _, bad := range []string{"  -> 192.0.2.41:3389 Route 1 0 0\n", "TCP 1.2.3.4:80\n", "garbage line\n"} {
		if _, err := parseIPVSADM(bad); err == nil {
			t.Errorf("parseIPVSADM(%q): no error", bad)
		}
	}
}
