package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRealServer(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string // in this order
		wantStderr string
	}{
		{"dr", []string{"--vip", "10.0.0.30", "--mode", "dr"}, 0, []string{
			"# Real server setup for VIP 10.0.0.30, mode dr: run as root",
			"\n# answer ARP only for addresses of the interface asked: never for the VIP, which is on lo\nsysctl -w net.ipv4.conf.all.arp_ignore=1\n",
			"\n# never use the VIP as the source address of ARP requests",
			"\nsysctl -w net.ipv4.conf.all.arp_announce=2\n",
			"\n# accept packets for the VIP",
			"\nip addr replace 10.0.0.30/32 dev lo\n",
		}, ""},
		{"dr is the default", []string{"-vip", "10.0.0.30"}, 0, []string{"mode dr", "ip addr replace 10.0.0.30/32 dev lo\n"}, ""},
		{"tun", []string{"--vip", "10.0.0.30", "--mode", "TUN"}, 0, []string{
			"mode tun",
			"\nsysctl -w net.ipv4.conf.all.arp_ignore=1\n",
			"\nsysctl -w net.ipv4.conf.all.arp_announce=2\n",
			"\n# load the IP-in-IP tunnel driver (RFC 2003), which creates tunl0\nmodprobe ipip\n",
			"\nip link set tunl0 up\n",
			"\nip addr replace 10.0.0.30/32 dev tunl0\n",
			"\nsysctl -w net.ipv4.conf.tunl0.rp_filter=0\n",
			"\nsysctl -w net.ipv4.conf.all.rp_filter=0\n",
		}, ""},
		{"dr IPv6", []string{"--vip", "2001:db8::30"}, 0, []string{"\nip -6 addr replace 2001:db8::30/128 dev lo\n"}, ""},
		{"nat", []string{"--vip", "10.0.0.30", "--mode", "nat"}, 0, []string{"# mode nat: a real server needs no setup", "ip route replace default via DIRECTOR_ADDRESS"}, ""},
		{"nat --apply", []string{"--vip", "10.0.0.30", "--mode", "nat", "--apply"}, 0, []string{"needs no setup"}, ""},
		{"tun IPv6", []string{"--vip", "2001:db8::30", "--mode", "tun"}, 1, nil, "mode tun with an IPv6 VIP is not supported yet"},
		{"no vip", []string{"--mode", "dr"}, 2, nil, "--vip ADDRESS is required"},
		{"vip with port", []string{"--vip", "10.0.0.30:3389"}, 2, nil, `--vip "10.0.0.30:3389": want an IP address without a port`},
		{"unknown mode", []string{"--vip", "10.0.0.30", "--mode", "http"}, 2, nil, `mode "http": want dr, tun or nat`},
		{"wildcard vip", []string{"--vip", "0.0.0.0"}, 2, nil, "want the virtual service's own unicast address"},
		{"stray argument", []string{"--vip", "10.0.0.30", "dr"}, 2, nil, `unexpected argument "dr"`},
		{"-h", []string{"-h"}, 0, nil, "Usage: fulcrum realserver --vip ADDRESS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"realserver"}, tt.args...), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, stdout.String(), stderr.String())
			}
			rest := stdout.String()
			for _, want := range tt.wantStdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout %q: no %q (after the earlier parts)", stdout.String(), want)
				}
				rest = rest[i+len(want):]
			}
			if tt.wantStdout == nil && stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantStderr == "" && stderr.Len() != 0 {
				t.Errorf("stderr %q, want nothing", stderr.String())
			}
		})
	}
}

// Every printed command line is a command the shell can run as is: comment
// lines and blank lines aside, nothing else.
func TestRealServerOutputIsAScript(t *testing.T) {
	var stdout bytes.Buffer
	if code := run([]string{"realserver", "--vip", "10.0.0.30", "--mode", "tun"}, &stdout, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		switch {
		case line == "", strings.HasPrefix(line, "# "):
		case strings.HasPrefix(line, "sysctl -w "), strings.HasPrefix(line, "ip "), line == "modprobe ipip":
			n++
		default:
			t.Errorf("line %q is neither a comment nor a setup command", line)
		}
	}
	if n != 7 {
		t.Errorf("%d commands, want 7", n)
	}
}

func TestRealServerApply(t *testing.T) {
	tests := []struct {
		name       string
		euid       int
		failAt     int // the 1-based command that fails; 0: none
		wantCode   int
		wantRan    int
		wantStdout string
		wantStderr string
	}{
		{"root", 0, 0, 0, 3, "# done: this host takes VIP 10.0.0.30's traffic in mode dr", ""},
		{"not root", 1000, 0, 1, 0, "", "--apply changes the network settings and needs root (running as uid 1000): run it with sudo"},
		{"a command fails", 0, 2, 1, 2, "sysctl -w net.ipv4.conf.all.arp_announce=2\n",
			"fulcrum realserver: sysctl -w net.ipv4.conf.all.arp_announce=2: exit status 255\nsysctl: permission denied\n" +
				"fulcrum realserver: stopped at command 2 of 3 (the ones before it took effect)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []string
			geteuid = func() int { return tt.euid }
			runCommand = func(argv []string) ([]byte, error) {
				ran = append(ran, strings.Join(argv, " "))
				if len(ran) == tt.failAt {
					return []byte("sysctl: permission denied\n"), errors.New("exit status 255")
				}
				return []byte("ok\n"), nil
			}
			t.Cleanup(func() { geteuid, runCommand = realGeteuid, realRunCommand })
			var stdout, stderr bytes.Buffer
			code := run([]string{"realserver", "--vip", "10.0.0.30", "--apply"}, &stdout, &stderr)
			if code != tt.wantCode || len(ran) != tt.wantRan {
				t.Fatalf("exit code %d after %d commands %q, want %d after %d (stdout %q, stderr %q)",
					code, len(ran), ran, tt.wantCode, tt.wantRan, stdout.String(), stderr.String())
			}
			if tt.wantRan == 3 && ran[2] != "ip addr replace 10.0.0.30/32 dev lo" {
				t.Errorf("ran %q", ran)
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

var realGeteuid, realRunCommand = geteuid, runCommand
