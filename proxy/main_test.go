package proxy

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// The package's tests run with one event loop serving plain HTTP/1.1
// clients, the production default here; TestGoroutineEngine runs them all
// again with none (event_loops = 0), so both engines pass every test.
const loopsEnv = "FULCRUM_TEST_EVENT_LOOPS"

func TestMain(m *testing.M) {
	loops.force = 1
	if v := os.Getenv(loopsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(loopsEnv + ": " + err.Error())
		}
		loops.force = n
	}
	os.Exit(m.Run())
}

func TestGoroutineEngine(t *testing.T) {
	if os.Getenv(loopsEnv) != "" {
		t.Skip("already the run without event loops")
	}
	if testing.Short() {
		t.Skip("-short: the package's tests without event loops are not run again")
	}
	args := []string{"-test.run", ".", "-test.skip", "^TestGoroutineEngine$", "-test.count", "1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), loopsEnv+"=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the package's tests without event loops failed: %v\n%s", err, out)
	}
}
