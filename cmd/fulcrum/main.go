// Command fulcrum is the Fulcrum load balancer: an L7 full proxy configured
// by one TOML file. This file only parses the command line and wires the
// packages together.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `fulcrum: an L7 full-proxy load balancer

Usage:
  fulcrum run -c PATH     run with a configuration file
  fulcrum check -c PATH   validate a configuration file and report every problem
  fulcrum demo            run the embedded demo: three real servers behind 127.0.0.1:8080
  fulcrum ctl COMMAND     talk to a running fulcrum's admin API: status, events,
                          drain|maint|ready VS/RS, weight VS/RS N, add, remove, reload
  fulcrum hash-password   print a bcrypt hash for [[admin.user]] password_hash
  fulcrum realserver --vip ADDRESS --mode dr|tun
                          print (or --apply) the setup a dr/tun real server needs
  fulcrum version         print the version

Run "fulcrum COMMAND -h" for a command's flags.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run executes the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "ctl":
		return cmdCtl(rest, os.Stdin, stdout, stderr)
	case "hash-password":
		return cmdHashPassword(rest, os.Stdin, stdout, stderr)
	case "realserver":
		return cmdRealServer(rest, stdout, stderr)
	case "version":
		return cmdVersion(rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "fulcrum: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// newFlags returns a flag set whose -h prints the command's synopsis.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("fulcrum "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fulcrum %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; ok is false with the exit code when the command
// should not go on (-h gives 0, a bad flag 2).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, false
	}
	return 0, true
}
