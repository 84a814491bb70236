package main

import (
	_ "embed"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

//go:embed demo.toml
var demoConfig []byte

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "demo [-print-config]", stderr)
	printCfg := fs.Bool("print-config", false, "print the embedded demo configuration and exit")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *printCfg {
		stdout.Write(demoConfig)
		return 0
	}
	cfg, err := config.Parse("demo.toml (embedded)", demoConfig)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	vs := cfg.VirtualServices[0]
	for _, rs := range vs.RealServers {
		l, err := net.Listen("tcp", rs.Address)
		if err != nil {
			fmt.Fprintf(stderr, "fulcrum demo: demo real server %s: %v\n", rs.Name, err)
			return 1
		}
		srv := &http.Server{Handler: demoHandler(rs.Name, rs.Address), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
	}
	ready := func() {
		fmt.Fprintf(stdout, `
Fulcrum demo: virtual service %q on http://%s balancing %d demo real servers (%s).

Try:
  curl http://%s/        (a few times: the real server's name changes, round robin)
  open http://%s/ in a browser
  open http://%s/ for the web UI (user admin, password demo): take a real
    server offline and watch curl skip it
  FULCRUM_PASSWORD=demo fulcrum ctl -url http://%s status
Press Ctrl-C to stop.

`, vs.Name, vs.Listen[0], len(vs.RealServers), demoNames(vs), vs.Listen[0], vs.Listen[0], cfg.Admin.Listen, cfg.Admin.Listen)
	}
	return serve(cfg, "", stderr, ready)
}

func demoNames(vs *config.VirtualService) string {
	var names []string
	for _, rs := range vs.RealServers {
		names = append(names, rs.Name+" "+rs.Address)
	}
	return strings.Join(names, ", ")
}

// demoHandler is a demo real server's page: its own name, like the test
// page of an appliance quick-start, and what it saw of the request.
func demoHandler(name, addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		xff := r.Header.Get("X-Forwarded-For")
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<!doctype html><html><head><title>%[1]s</title></head>
<body style="font-family:sans-serif;text-align:center;margin-top:15vh">
<h1>%[1]s</h1><p>Fulcrum demo real server at %[2]s</p>
<p>Client (X-Forwarded-For): %[3]s</p><p>Reload to see the next real server.</p></body></html>
`, html.EscapeString(name), html.EscapeString(addr), html.EscapeString(xff))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s: Fulcrum demo real server at %s (client %s, %s %s)\n", name, addr, xff, r.Method, r.URL.RequestURI())
	})
}
