// Command idleconns measures what idle keep-alive clients cost a proxy.
//
// It opens -n TCP connections to -addr (loopback only), sends one HTTP/1.1
// request on each and reads the whole response, so that every connection is
// a keep-alive connection the proxy has served, then holds them all idle for
// -hold while sampling the proxy's VmRSS from /proc/PID/status. At the end it
// checks that each connection is still open (a read that times out rather
// than seeing EOF), closes them and prints a report. The last line starts
// with "RESULT" and holds key=value pairs for scripts (bench/run).
//
// It exits 1 if any connection could not be opened, answered with something
// other than 200, or was closed by the proxy before the end of the hold.
//
// Usage:
//
//	idleconns -addr 127.0.0.1:18083 -n 10000 -pid $(pidof fulcrum)
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18083", "proxy address (must be a loopback IP:port)")
	n := flag.Int("n", 10000, "number of connections to open and hold")
	pid := flag.Int("pid", 0, "PID of the proxy whose RSS to report (0: none)")
	hold := flag.Duration("hold", 5*time.Second, "how long to hold the connections idle before measuring")
	parallel := flag.Int("parallel", 100, "connections opened concurrently")
	path := flag.String("path", "/", "request path")
	timeout := flag.Duration("timeout", 10*time.Second, "bound on dialing and on each request/response")
	flag.Parse()

	if err := checkLoopback(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(2)
	}
	if *n < 1 || *parallel < 1 {
		fmt.Fprintln(os.Stderr, "idleconns: -n and -parallel must be positive")
		os.Exit(2)
	}

	before := readStatus(*pid)
	fdsBefore := countFDs(*pid)

	// Open and serve every connection.
	conns := make([]net.Conn, *n)
	var (
		next    atomic.Int64
		failed  atomic.Int64
		errMu   sync.Mutex
		errSeen = map[string]int{}
		wg      sync.WaitGroup
	)
	req := []byte("GET " + *path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: fulcrum-bench-idleconns\r\n\r\n")
	start := time.Now()
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= *n {
					return
				}
				c, err := openOne(*addr, req, *timeout)
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errSeen[err.Error()]++
					errMu.Unlock()
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	openTime := time.Since(start)
	opened := *n - int(failed.Load())
	fmt.Printf("opened %d/%d keep-alive connections to %s in %v (%d failed)\n",
		opened, *n, *addr, openTime.Round(time.Millisecond), failed.Load())
	for msg, k := range errSeen {
		fmt.Printf("  error x%d: %s\n", k, msg)
	}

	// Hold them idle, sampling the proxy's RSS.
	atOpen := readStatus(*pid)
	maxRSS := atOpen.rss
	deadline := time.Now().Add(*hold)
	for time.Now().Before(deadline) {
		time.Sleep(min(500*time.Millisecond, time.Until(deadline)))
		if s := readStatus(*pid); s.rss > maxRSS {
			maxRSS = s.rss
		}
	}
	held := readStatus(*pid)
	if held.rss > maxRSS {
		maxRSS = held.rss
	}
	fdsHeld := countFDs(*pid)

	// Which connections has the proxy kept? A read that times out means open.
	var alive atomic.Int64
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var b [1]byte
			_, err := c.Read(b[:])
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				alive.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}

	if *pid > 0 {
		perConn := 0.0
		if opened > 0 {
			perConn = float64(held.rss-before.rss) * 1024 / float64(opened)
		}
		fmt.Printf("proxy pid %d: VmRSS %.1f MiB before, %.1f MiB with all open, %.1f MiB after %v idle (max %.1f MiB); ~%.0f B/conn\n",
			*pid, mib(before.rss), mib(atOpen.rss), mib(held.rss), *hold, mib(maxRSS), perConn)
		fmt.Printf("proxy pid %d: %d fds before, %d while holding; threads %d\n", *pid, fdsBefore, fdsHeld, held.threads)
	}
	fmt.Printf("still open after %v idle: %d/%d\n", *hold, alive.Load(), opened)
	fmt.Printf("RESULT n=%d opened=%d failed=%d alive=%d open_ms=%d rss_before_kib=%d rss_open_kib=%d rss_held_kib=%d rss_max_kib=%d hwm_kib=%d fds_before=%d fds_held=%d threads=%d\n",
		*n, opened, failed.Load(), alive.Load(), openTime.Milliseconds(),
		before.rss, atOpen.rss, held.rss, maxRSS, held.hwm, fdsBefore, fdsHeld, held.threads)
	if opened != *n || int(alive.Load()) != opened {
		os.Exit(1)
	}
}

// checkLoopback refuses any target that is not a literal loopback IP.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only loopback IP addresses may be targeted", addr)
	}
	return nil
}

// openOne dials addr, sends req and reads one whole response, leaving the
// connection idle and ready for another request.
func openOne(addr string, req []byte, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 2048)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("status %s", resp.Status)
	case resp.Close:
		err = errors.New("proxy closed the connection after the response")
	case br.Buffered() != 0:
		err = errors.New("unexpected bytes after the response")
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

type status struct{ rss, hwm, threads int64 } // rss, hwm in KiB

// readStatus reads VmRSS, VmHWM and Threads of pid (zeros if pid is 0).
func readStatus(pid int) status {
	var s status
	if pid <= 0 {
		return s
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		return s
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		x, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.rss = x
		case "VmHWM":
			s.hwm = x
		case "Threads":
			s.threads = x
		}
	}
	return s
}

// countFDs is the number of open file descriptors of pid (0 if unknown).
func countFDs(pid int) int {
	if pid <= 0 {
		return 0
	}
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(es)
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
