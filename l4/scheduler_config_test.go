package l4

import (
	"testing"

	"github.com/fulcrumlb/fulcrum/config"
)

// TestConfigSchedulersMap checks that every scheduler the configuration
// accepts in the L4 modes has an IPVS equivalent: config keeps its own list
// (it may not import this package, which needs netlink).
func TestConfigSchedulersMap(t *testing.T) {
	for _, name := range config.L4Schedulers() {
		if _, err := IPVSScheduler(name); err != nil {
			t.Errorf("config accepts scheduler %q: %v", name, err)
		}
	}
	if got, _ := IPVSScheduler(config.DefaultScheduler); got != "rr" {
		t.Errorf("the default scheduler %q maps to %q, want rr", config.DefaultScheduler, got)
	}
}
