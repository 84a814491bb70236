// Command vmrun boots the test VM by hand: it runs a program (by default
// none) in the guest and, with -shell, leaves a shell on the console for
// debugging. For example, the l4 tests' VM with a shell after one test:
//
//	CGO_ENABLED=0 go test -c -o /tmp/l4.test ./l4
//	go run ./test/vm/vmrun -shell \
//	  -modules ip_vs_rr,ip_vs_wrr,ip_vs_lc,ip_vs_wlc,ip_vs_sh,ip_vs_mh,ipip,veth,bridge \
//	  -tools ipvsadm,ip /tmp/l4.test -test.v -test.run TestVMDelivery
//
// TestVMFulcrumBinary also needs the fulcrum binary (static) in the guest:
//
//	CGO_ENABLED=0 go build -o /tmp/fulcrum ./cmd/fulcrum
//	go run ./test/vm/vmrun -files /usr/bin/fulcrum=/tmp/fulcrum -modules … -tools ipvsadm,ip \
//	  /tmp/l4.test -test.v -test.run TestVMFulcrumBinary
//
// In the shell, FULCRUM_IN_VM=1 is set; `poweroff -f` (or exit) ends the VM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fulcrumlb/fulcrum/test/vm"
)

func main() {
	modules := flag.String("modules", "", "kernel modules to load, comma-separated (dependencies are added)")
	tools := flag.String("tools", "", "host commands to copy into the guest with their libraries, comma-separated")
	files := flag.String("files", "", "more programs to copy, GUEST=HOST pairs, comma-separated (e.g. /usr/bin/fulcrum=/tmp/fulcrum)")
	shell := flag.Bool("shell", false, "start a shell on the console after the program")
	accel := flag.String("accel", "", "kvm, tcg or auto (default: $FULCRUM_VM_ACCEL, else auto)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: vmrun [flags] [PROGRAM [ARGS…]]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg := vm.Config{
		Modules: split(*modules),
		Tools:   split(*tools),
		Shell:   *shell,
		Boot: vm.BootOptions{
			Accel:       *accel,
			Interactive: *shell,
			Timeout:     24 * time.Hour,
			Console:     func(line string) { fmt.Println(line) },
			Logf:        func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
		},
	}
	for _, f := range split(*files) {
		guest, host, ok := strings.Cut(f, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "vmrun: -files %q: want GUEST=HOST\n", f)
			os.Exit(2)
		}
		if cfg.Files == nil {
			cfg.Files = map[string]string{}
		}
		cfg.Files[guest] = host
	}
	if flag.NArg() > 0 {
		cfg.Program, cfg.Args = flag.Arg(0), flag.Args()[1:]
	}
	res, err := vm.Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "vmrun: %s, /init after %v, done after %v, exit status %d\n", res.Accel, res.Boot, res.Total, res.ExitStatus)
	os.Exit(res.ExitStatus)
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
