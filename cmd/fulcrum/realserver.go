package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/fulcrumlb/fulcrum/l4"
)

// Seams for the tests of --apply.
var (
	geteuid = os.Geteuid
	// runCommand runs argv and returns its combined output.
	runCommand = func(argv []string) ([]byte, error) {
		return exec.Command(argv[0], argv[1:]...).CombinedOutput()
	}
)

const realServerUsage = `Usage: fulcrum realserver --vip ADDRESS [--mode dr|tun|nat] [--apply]

Prints the Linux commands a real server of a dr or tun virtual service needs,
one per line with a comment saying what it does: the VIP on lo (dr) or on
tunl0 (tun), and ARP settings so that only the director answers for the VIP.
Run it on the real server; --apply runs the commands (as root) and stops at
the first that fails. The settings do not survive a reboot: put the sysctls
in /etc/sysctl.d/ and the address in the network configuration.

`

func cmdRealServer(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("realserver", "realserver --vip ADDRESS [--mode dr|tun|nat] [--apply]", stderr)
	vipFlag := fs.String("vip", "", "the virtual service's address, its listen without the port (required)")
	mode := fs.String("mode", string(l4.DirectRouting), "the virtual service's mode: dr, tun or nat")
	apply := fs.Bool("apply", false, "run the commands (needs root) instead of printing them")
	fs.Usage = func() {
		fmt.Fprint(stderr, realServerUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *vipFlag == "" {
		fmt.Fprintln(stderr, "fulcrum realserver: --vip ADDRESS is required")
		fs.Usage()
		return 2
	}
	vip, err := netip.ParseAddr(*vipFlag)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum realserver: --vip %q: want an IP address without a port\n", *vipFlag)
		return 2
	}
	fwd := l4.Forwarding(strings.ToLower(*mode))
	cmds, err := l4.RealServerCommands(vip, fwd)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum realserver: %v\n", err)
		if errors.Is(err, l4.ErrIPv6Tunnel) {
			return 1
		}
		return 2
	}
	if fwd == l4.NAT {
		// Nothing to set up on the real server: IPVS rewrites the
		// destination, and the replies must pass the director to be
		// rewritten back.
		fmt.Fprintf(stdout, "# mode nat: a real server needs no setup for VIP %s, only its default route through\n"+
			"# the director, which rewrites the replies back to the VIP:\n#   ip route replace default via DIRECTOR_ADDRESS\n", vip.Unmap())
		return 0
	}
	if !*apply {
		fmt.Fprintf(stdout, "# Real server setup for VIP %s, mode %s: run as root (or: fulcrum realserver --vip %s --mode %s --apply).\n"+
			"# Not kept across a reboot: put the sysctls in /etc/sysctl.d/ and the address in the network configuration.\n",
			vip.Unmap(), fwd, vip.Unmap(), fwd)
		for _, c := range cmds {
			fmt.Fprintf(stdout, "\n# %s\n%s\n", c.Why, c)
		}
		return 0
	}
	if uid := geteuid(); uid != 0 {
		fmt.Fprintf(stderr, "fulcrum realserver: --apply changes the network settings and needs root (running as uid %d): "+
			"run it with sudo, or run the commands it prints without --apply\n", uid)
		return 1
	}
	for i, c := range cmds {
		fmt.Fprintf(stdout, "# %s\n%s\n", c.Why, c)
		out, err := runCommand(c.Argv)
		if err != nil {
			fmt.Fprintf(stderr, "fulcrum realserver: %s: %v\n", c, err)
			if s := strings.TrimSpace(string(out)); s != "" {
				fmt.Fprintf(stderr, "%s\n", s)
			}
			fmt.Fprintf(stderr, "fulcrum realserver: stopped at command %d of %d (the ones before it took effect)\n", i+1, len(cmds))
			return 1
		}
	}
	fmt.Fprintf(stdout, "# done: this host takes VIP %s's traffic in mode %s\n", vip.Unmap(), fwd)
	return 0
}
