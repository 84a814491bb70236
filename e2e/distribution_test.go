package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDistribution sends sequential requests (one curl, one keep-alive
// client connection) and counts which real server answered each.
func TestDistribution(t *testing.T) {
	needCurl(t)
	tests := []distributionCase{
		{"round robin equal", "round_robin", []int{1, 1, 1}, 30, []int{10, 10, 10}},
		{"round robin ignores weights", "round_robin", []int{3, 1}, 40, []int{20, 20}},
		{"round robin skips weight 0", "round_robin", []int{1, 0, 1}, 30, []int{15, 0, 15}},
		{"weighted round robin 3:1", "weighted_round_robin", []int{3, 1}, 40, []int{30, 10}},
		{"weighted round robin 1:2:3", "weighted_round_robin", []int{1, 2, 3}, 60, []int{10, 20, 30}},
		{"least conn sequential", "least_conn", []int{1, 1, 1}, 30, []int{10, 10, 10}},
	}
	// Both HTTP/1.1 engines: the event loops (the default) and a goroutine
	// per client connection (event_loops = 0).
	engines := []struct{ name, global string }{{"event loop", ""}, {"goroutines", defaultGlobal + "event_loops = 0\n"}}
	for _, e := range engines {
		for _, tt := range tests {
			t.Run(e.name+"/"+tt.name, func(t *testing.T) { tt.run(t, e.global) })
		}
	}
}

type distributionCase struct {
	name      string
	scheduler string
	weights   []int
	requests  int
	want      []int // requests per real server
}

func (tt distributionCase) run(t *testing.T, global string) {
	vip := freeAddr(t)
	svc := service{listen: []string{vip}, opts: fmt.Sprintf("scheduler = %q\n", tt.scheduler)}
	for i, w := range tt.weights {
		b := newHTTPBackend(t, fmt.Sprintf("web%d", i+1), nil)
		svc.real = append(svc.real, b.real(fmt.Sprintf("weight = %d\n", w)))
	}
	startFulcrum(t, config{global: global, services: []service{svc}})

	urls := make([]string, tt.requests)
	for i := range urls {
		urls[i] = "http://" + vip + "/"
	}
	r := curl(t, urls...)
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	count := map[string]int{}
	lines := strings.Fields(r.stdout)
	for _, name := range lines {
		count[name]++
	}
	if len(lines) != tt.requests {
		t.Fatalf("got %d answers, want %d: %q", len(lines), tt.requests, r.stdout)
	}
	for i, want := range tt.want {
		name := fmt.Sprintf("web%d", i+1)
		if count[name] != want {
			t.Errorf("%s answered %d of %d requests, want %d (all: %v)", name, count[name], tt.requests, want, count)
		}
	}
}

// TestLeastConnAvoidsBusy: while one real server holds a long request,
// least_conn sends the short ones to the other.
func TestLeastConnAvoidsBusy(t *testing.T) {
	needCurl(t)
	busy := make(chan string, 2)
	release := make(chan struct{})
	vip := freeAddr(t)
	svc := service{listen: []string{vip}, opts: "scheduler = \"least_conn\"\n"}
	for i := range 2 {
		name := fmt.Sprintf("web%d", i+1)
		b := newHTTPBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/long" {
				busy <- name
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
			fmt.Fprintln(w, name)
		}))
		svc.real = append(svc.real, b.real(""))
	}
	startFulcrum(t, config{services: []service{svc}})

	long := make(chan error, 1)
	go func() {
		s, _, err := curlStatusErr(t, "http://"+vip+"/long")
		if err == nil && s != 200 {
			err = fmt.Errorf("status %d, want 200", s)
		}
		long <- err
	}()
	var holder string
	select {
	case holder = <-busy:
	case <-time.After(10 * time.Second):
		t.Fatal("long request did not reach a real server")
	}
	urls := make([]string, 10)
	for i := range urls {
		urls[i] = "http://" + vip + "/short"
	}
	r := curl(t, urls...)
	close(release)
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	for _, name := range strings.Fields(r.stdout) {
		if name == holder {
			t.Errorf("short request sent to %s, which holds the long one; answers: %q", holder, r.stdout)
			break
		}
	}
	if err := <-long; err != nil {
		t.Errorf("long request: %v", err)
	}
}
