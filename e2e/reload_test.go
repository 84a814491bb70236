package e2e

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needWrk skips the test when wrk is not installed.
func needWrk(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not found in PATH: install wrk (Debian package wrk) to run this end-to-end test")
	}
	return p
}

// wrkResult is what a wrk run reported.
type wrkResult struct {
	requests, non2xx, socketErrors int
	out                            string
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrk(out string) wrkResult {
	r := wrkResult{out: out}
	if m := wrkRequests.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(m[1])
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.socketErrors += n
		}
	}
	return r
}

// TestReloadUnderLoad reloads the configuration over and over while wrk
// drives the virtual service at full speed: weights, schedulers, timeouts,
// health checks and real servers change, one reload brings a broken file,
// and not one request may fail.
func TestReloadUnderLoad(t *testing.T) {
	wrk := needWrk(t)
	a := newHTTPBackend(t, "a", nil)
	b := newHTTPBackend(t, "b", nil)
	c := newHTTPBackend(t, "c", nil)
	vip := freeAddr(t)
	// No access log: the test reads the log after every reload.
	const global = "log_format = \"json\"\naccess_log = false\n"
	base := func(opts, health string, reals ...real) config {
		return config{global: global, services: []service{{listen: []string{vip}, opts: opts, health: health, real: reals}}}
	}
	versions := []config{
		base("", "", a.real(""), b.real("")),
		base("scheduler = \"weighted_round_robin\"\n", "", a.real("weight = 3\n"), b.real("weight = 1\n")),
		base("scheduler = \"least_conn\"\n", "type = \"tcp\"\ninterval = \"200ms\"\n", a.real(""), b.real(""), c.real("")),
		base("retries = 1\n", "type = \"http\"\npath = \"/\"\ninterval = \"150ms\"\n", b.real(""), c.real("weight = 2\n")),
		base("", "", a.real(""), c.real("max_conns = 4\n")),
		base("queue_timeout = \"2s\"\n", "", a.real(""), b.real(""), c.real("")),
	}
	f := startFulcrum(t, versions[0])

	done := make(chan wrkResult, 1)
	go func() {
		out, err := exec.Command(wrk, "-t2", "-c32", "-d6s", "http://"+vip+"/").CombinedOutput()
		if err != nil {
			t.Errorf("wrk: %v\n%s", err, out)
		}
		done <- parseWrk(string(out))
	}()
	// Wait until wrk is at work.
	waitFor(t, 5*time.Second, "wrk traffic", func() bool { return a.reqs.Load()+b.reqs.Load() > 1000 })

	reloaded := func() int {
		return len(f.logsWhere(func(e logEntry) bool { return e.str("msg") == "configuration reloaded" }))
	}
	refused := func() int {
		return len(f.logsWhere(func(e logEntry) bool { return strings.HasPrefix(e.str("msg"), "reload refused") }))
	}
	deadline := time.Now().Add(4 * time.Second)
	reloads := 0
	for i := 1; time.Now().Before(deadline); i++ {
		if i%4 == 0 {
			// A broken file: refused, the running configuration stays.
			broken := versions[i%len(versions)]
			broken.global = global + "grace = \"soon\"\n"
			f.rewrite(broken)
			n := refused()
			f.signal(syscall.SIGHUP)
			waitFor(t, 5*time.Second, "reload refused", func() bool { return refused() > n })
			continue
		}
		f.rewrite(versions[i%len(versions)])
		n := reloaded()
		f.signal(syscall.SIGHUP)
		waitFor(t, 5*time.Second, "reload", func() bool { return reloaded() > n })
		reloads++
	}
	r := <-done
	if r.requests < 1000 || r.non2xx != 0 || r.socketErrors != 0 {
		t.Errorf("wrk during %d reloads: %d requests, %d non-2xx, %d socket errors; want no failures\n%s",
			reloads, r.requests, r.non2xx, r.socketErrors, r.out)
	}
	if reloads < 20 {
		t.Errorf("only %d reloads in 4s", reloads)
	}
	if c.reqs.Load() == 0 {
		t.Error("c, added by a reload, got no traffic")
	}
	t.Logf("wrk: %d requests during %d reloads (and %d refused), no failures", r.requests, reloads, refused())
	if e := f.waitLog(time.Second, "refusal detail", func(e logEntry) bool { return strings.HasPrefix(e.str("msg"), "reload refused") }); !strings.Contains(e.str("error"), "global.grace") {
		t.Errorf("refused reload log = %v, want the problem with global.grace", e)
	}
	if code := f.stop(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
