package l4

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrNoIPVS means the running kernel has no IPVS: the generic netlink
// family "IPVS" does not exist until the ip_vs module is loaded (it is not
// loaded on demand).
var ErrNoIPVS = errors.New("the kernel has no IPVS (ip_vs module): load it with `modprobe ip_vs` " +
	"(to load it at boot: echo ip_vs > /etc/modules-load.d/fulcrum.conf), or use a kernel built with CONFIG_IP_VS")

// ErrPermission means the process may not change IPVS: every IPVS netlink
// command needs CAP_NET_ADMIN (GENL_ADMIN_PERM).
var ErrPermission = errors.New("changing IPVS needs CAP_NET_ADMIN: run fulcrum as root, " +
	"or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN; or setcap cap_net_admin+ep on the binary)")

// ErrNoScheduler means the kernel lacks an IPVS scheduler's module.
var ErrNoScheduler = errors.New("the kernel has no such IPVS scheduler")

// classify wraps an error of the ipvs package in the sentinel that names its
// cause and fix, keeping the original error for errors.Is and the message.
// sched is the scheduler of a service being created or updated, else "".
func classify(err error, sched string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w (%v)", ErrPermission, err)
	case sched != "" && errors.Is(err, os.ErrNotExist):
		// ip_vs_scheduler_get: request_module("ip_vs_%s") failed.
		return fmt.Errorf("%w %q (%v): load it with `modprobe ip_vs_%s`", ErrNoScheduler, sched, err, sched)
	}
	return err
}
