package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fulcrumlb/fulcrum/config"
)

// defaultAdminURL is where ctl looks for the admin API without -url or -c:
// the address the README's example [admin] table listens on.
const defaultAdminURL = "http://127.0.0.1:9080"

// maxAnswerBytes bounds an admin API answer read by ctl.
const maxAnswerBytes = 16 << 20

// ctlCall is one admin API request a ctl command makes, and how to show a
// successful answer.
type ctlCall struct {
	method string
	path   string // escaped, from /api/v1/
	body   any    // marshalled as JSON; nil for none
	show   func(w io.Writer, answer []byte) error
}

// ctlCommand is one command of fulcrum ctl. prepare checks the arguments
// (an error is a bad command line) before any password is asked for.
type ctlCommand struct {
	name    string
	args    string
	help    string
	prepare func(args []string) (ctlCall, error)
}

var ctlCommands = []ctlCommand{
	{"status", "", "every virtual service and real server: color, health, state, weight, load, last check", prepareStatus},
	{"events", "", "recent events: health changes, agent replies, admin actions, reloads", prepareEvents},
	{"drain", "VS/RS", "no new clients; persistent clients and open connections still reach it", prepareState("drain")},
	{"maint", "VS/RS", "maintenance: no traffic at all (also spelled maintenance)", prepareState("maintenance")},
	{"maintenance", "VS/RS", "", prepareState("maintenance")},
	{"ready", "VS/RS", "bring a real server back into service", prepareState("ready")},
	{"weight", "VS/RS N", fmt.Sprintf("set the configured weight, 0..%d", config.MaxWeight), prepareWeight},
	{"add", "VS NAME ADDRESS [WEIGHT]", "add a real server at runtime (VS/NAME ADDRESS [WEIGHT] works too)", prepareAdd},
	{"remove", "VS/RS", "remove a real server at runtime", prepareRemove},
	{"reload", "", "re-read the configuration file; a refused file's problems are printed", prepareReload},
	{"ha", "status|takeover|release|auto", "high availability: show the VRRP state; become Master; hand over; back to the configured priority", prepareHA},
}

func findCtlCommand(name string) (ctlCommand, bool) {
	for _, c := range ctlCommands {
		if c.name == name {
			return c, true
		}
	}
	return ctlCommand{}, false
}

func ctlUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, "Usage: fulcrum ctl [flags] COMMAND [ARGS]\n\nTalks to the admin API of a running fulcrum ([admin] in its configuration).\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, c := range ctlCommands {
		if c.help != "" {
			fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.help)
		}
	}
	tw.Flush()
	fmt.Fprint(w, `
VS/RS names a real server of a virtual service, as in "web/web1".
The password is read from -password-file, else $FULCRUM_PASSWORD, else asked
for when standard input is a terminal. Flags may come before or after the
command.

Flags:
`)
	fs.PrintDefaults()
}

// ctlOptions are fulcrum ctl's flags.
type ctlOptions struct {
	config       string
	url          string
	user         string
	passwordFile string
	insecure     bool
	json         bool
	timeout      time.Duration
}

func cmdCtl(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o ctlOptions
	fs := newFlags("ctl", "ctl [flags] COMMAND [ARGS]", stderr)
	fs.Usage = func() { ctlUsage(stderr, fs) }
	user := os.Getenv("FULCRUM_USER")
	if user == "" {
		user = "admin"
	}
	fs.StringVar(&o.config, "c", "", "configuration file: talk to its [admin] listen address (trusting its tls_cert)")
	fs.StringVar(&o.url, "url", "", "admin API address; overrides -c (default "+defaultAdminURL+")")
	fs.StringVar(&o.user, "user", user, "user name; $FULCRUM_USER sets the default")
	fs.StringVar(&o.passwordFile, "password-file", "", "read the password from the first line of this file")
	fs.BoolVar(&o.insecure, "k", false, "do not verify the admin API's TLS certificate")
	fs.BoolVar(&o.json, "json", false, "print the API's JSON answer as it is")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up on an answer after this long")

	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "fulcrum ctl: no command")
		fs.Usage()
		return 2
	}
	if pos[0] == "help" {
		fs.Usage()
		return 0
	}
	cmd, ok := findCtlCommand(pos[0])
	if !ok {
		fmt.Fprintf(stderr, "fulcrum ctl: unknown command %q\n", pos[0])
		fs.Usage()
		return 2
	}
	call, err := cmd.prepare(pos[1:])
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum ctl %s: %v\nUsage: fulcrum ctl [flags] %s %s\n", cmd.name, err, cmd.name, cmd.args)
		return 2
	}
	if o.timeout <= 0 {
		fmt.Fprintf(stderr, "fulcrum ctl: -timeout %v: must be > 0\n", o.timeout)
		return 2
	}
	if o.user == "" {
		fmt.Fprintln(stderr, "fulcrum ctl: -user: must not be empty")
		return 2
	}
	c, code, err := newCtlClient(o)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum ctl: %v\n", err)
		return code
	}
	defer c.close()
	if c.password, c.pwFrom, code, err = ctlPassword(o, c.base, stdin, stderr); err != nil {
		fmt.Fprintf(stderr, "fulcrum ctl: %v\n", err)
		return code
	}

	status, answer, err := c.do(call)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum ctl: %v\n", err)
		return 1
	}
	if o.json && len(answer) > 0 {
		stdout.Write(answer)
		if answer[len(answer)-1] != '\n' {
			fmt.Fprintln(stdout)
		}
	}
	if status < 200 || status > 299 {
		printAPIError(stderr, status, answer)
		if status == http.StatusUnauthorized {
			fmt.Fprintf(stderr, "fulcrum ctl: sent user %q (-user, $FULCRUM_USER) with the password from %s\n", c.user, c.pwFrom)
		}
		return 1
	}
	if !o.json {
		if err := call.show(stdout, answer); err != nil {
			fmt.Fprintf(stderr, "fulcrum ctl: cannot read the answer of %s: %v\n", c.base, err)
			return 1
		}
	}
	return 0
}

// parseInterleaved parses fs's flags wherever they are in args, so that
// "ctl status -json" works as well as "ctl -json status", and returns the
// other arguments in order. "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// ctlClient calls the admin API of one fulcrum.
type ctlClient struct {
	base     string // scheme://host[:port][/prefix], no trailing slash
	user     string
	password string
	pwFrom   string // where the password came from, for the hint after a 401
	timeout  time.Duration
	http     *http.Client
	tr       *http.Transport
}

// newCtlClient finds the admin API (-url, else -c's [admin], else the
// default) and sets up the HTTP client; on error, code is the exit code.
func newCtlClient(o ctlOptions) (c *ctlClient, code int, err error) {
	base := defaultAdminURL
	var pinned *x509.Certificate
	if o.config != "" {
		cfg, err := config.Load(o.config)
		if err != nil {
			return nil, 1, fmt.Errorf("-c: %w", err)
		}
		if base, err = adminURL(cfg.Admin); err != nil {
			return nil, 1, fmt.Errorf("%s: %w", o.config, err)
		}
		if cfg.Admin.TLSCert != "" {
			if pinned, err = readCert(cfg.Admin.TLSCert); err != nil {
				return nil, 1, fmt.Errorf("%s: admin.tls_cert: %w", o.config, err)
			}
		}
	}
	if o.url != "" {
		if base, err = parseAdminURL(o.url); err != nil {
			return nil, 2, fmt.Errorf("-url %q: %w", o.url, err)
		}
	}
	u, _ := url.Parse(base)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = ctlTLSConfig(u.Hostname(), o.insecure, pinned)
	c = &ctlClient{base: base, user: o.user, timeout: o.timeout, tr: tr, http: &http.Client{
		Transport: tr,
		Timeout:   o.timeout,
		// Credentials are not sent on to wherever a redirect points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	return c, 0, nil
}

func (c *ctlClient) close() { c.tr.CloseIdleConnections() }

// adminURL is the URL at which a local ctl reaches the admin listener a:
// a wildcard address is reached on the loopback address of its family.
func adminURL(a config.Admin) (string, error) {
	if a.Listen == "" {
		return "", errors.New("no [admin] listen address: the admin API is off")
	}
	host, port, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q: %w", a.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	scheme := "http"
	if a.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// parseAdminURL checks -url and returns it without a trailing slash; a bare
// host:port means http.
func parseAdminURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", errors.Unwrap(err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("scheme %q: want http or https", u.Scheme)
	case u.Host == "":
		return "", errors.New("no host")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("want scheme://host:port[/path] only; give the user with -user")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// readCert reads the first certificate of a PEM file.
func readCert(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return nil, errors.New("no CERTIFICATE block")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ctlTLSConfig verifies the admin API's certificate as usual, except that
// the certificate of the configuration's tls_cert (pinned, when -c is
// given) is trusted as it is: an appliance's admin certificate is often
// self-signed, or names the host rather than the loopback address ctl uses.
func ctlTLSConfig(host string, insecure bool, pinned *x509.Certificate) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case insecure:
		tc.InsecureSkipVerify = true
	case pinned != nil:
		tc.InsecureSkipVerify = true // VerifyConnection does it
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			leaf := cs.PeerCertificates[0]
			if leaf.Equal(pinned) {
				return nil
			}
			opts := x509.VerifyOptions{DNSName: host, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			if _, err := leaf.Verify(opts); err != nil {
				return fmt.Errorf("%w (and it is not the configuration's tls_cert)", err)
			}
			return nil
		}
	}
	return tc
}

// ctlPassword finds the password: -password-file, $FULCRUM_PASSWORD, or a
// prompt on a terminal; from says which. On error, code is the exit code.
func ctlPassword(o ctlOptions, base string, stdin io.Reader, stderr io.Writer) (pw, from string, code int, err error) {
	switch {
	case o.passwordFile != "":
		from = "-password-file " + o.passwordFile
		f, err := os.Open(o.passwordFile)
		if err != nil {
			return "", from, 1, fmt.Errorf("-password-file: %w", err)
		}
		defer f.Close()
		pw, err := readFirstLine(f)
		if err == nil && pw == "" {
			err = errors.New("the first line is empty")
		}
		if err != nil {
			return "", from, 1, fmt.Errorf("-password-file %s: %w", o.passwordFile, err)
		}
		return pw, from, 0, nil
	case os.Getenv("FULCRUM_PASSWORD") != "":
		return os.Getenv("FULCRUM_PASSWORD"), "$FULCRUM_PASSWORD", 0, nil
	}
	if f, ok := terminal(stdin); ok {
		pw, err := readPasswordTerminal(f, fmt.Sprintf("Password for %s at %s: ", o.user, base), stderr)
		if err != nil {
			return "", "the prompt", 1, err
		}
		return pw, "the prompt", 0, nil
	}
	return "", "", 2, errors.New("no password: set FULCRUM_PASSWORD, give -password-file, or run on a terminal to be asked")
}

// do sends call and returns the answer's status and body. The error is for
// a request that got no answer, and says what to check.
func (c *ctlClient) do(call ctlCall) (status int, answer []byte, err error) {
	var body io.Reader
	if call.body != nil {
		b, err := json.Marshal(call.body)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	target := c.base + call.path
	req, err := http.NewRequest(call.method, target, body)
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth(c.user, c.password)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "fulcrum-ctl/"+version)
	if call.method != http.MethodGet {
		// Required of every mutating call with Basic auth, body or not: a
		// cross-site form cannot send it without a CORS preflight, which
		// the admin server never grants.
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, c.explain(err)
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return 0, nil, c.explain(err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		if loc := resp.Header.Get("Location"); loc != "" {
			return resp.StatusCode, answer, fmt.Errorf("%s redirects to %s; give that address with -url", c.base, clean(loc))
		}
	}
	return resp.StatusCode, answer, nil
}

// explain turns a failed request into a message that says what to check.
func (c *ctlClient) explain(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	var ce *tls.CertificateVerificationError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot connect to %s: connection refused; is fulcrum running with an [admin] listen address there? (give it with -url, or the configuration file with -c)", c.base)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no answer from %s within %v (-timeout)", c.base, c.timeout)
	case errors.As(err, &ce):
		return fmt.Errorf("%s: %v; with -c the configuration's tls_cert is trusted, -k skips the check", c.base, ce.Err)
	}
	return fmt.Errorf("%s: %w", c.base, err)
}

// serverPath is the API path of real server "VS/RS", checked to have
// exactly one '/' with a name on each side.
func serverPath(arg string) (path, vs, rs string, err error) {
	vs, rs, ok := strings.Cut(arg, "/")
	if !ok || vs == "" || rs == "" || strings.Contains(rs, "/") {
		return "", "", "", fmt.Errorf("%q: want VS/RS, a virtual service and one of its real servers, as in web/web1", arg)
	}
	return "/api/v1/services/" + url.PathEscape(vs) + "/servers/" + url.PathEscape(rs), vs, rs, nil
}

func wantArgs(args []string, lo, hi int) error {
	switch {
	case len(args) < lo:
		return errors.New("missing argument")
	case len(args) > hi:
		return fmt.Errorf("unexpected argument %q", args[hi])
	}
	return nil
}

// say shows a fixed confirmation, whatever the answer.
func say(format string, args ...any) func(io.Writer, []byte) error {
	return func(w io.Writer, _ []byte) error {
		_, err := fmt.Fprintf(w, format+"\n", args...)
		return err
	}
}

func prepareState(state string) func([]string) (ctlCall, error) {
	return func(args []string) (ctlCall, error) {
		if err := wantArgs(args, 1, 1); err != nil {
			return ctlCall{}, err
		}
		p, vs, rs, err := serverPath(args[0])
		if err != nil {
			return ctlCall{}, err
		}
		return ctlCall{method: http.MethodPut, path: p + "/state", body: map[string]string{"state": state},
			show: say("%s/%s: %s", vs, rs, state)}, nil
	}
}

func prepareWeight(args []string) (ctlCall, error) {
	if err := wantArgs(args, 2, 2); err != nil {
		return ctlCall{}, err
	}
	p, vs, rs, err := serverPath(args[0])
	if err != nil {
		return ctlCall{}, err
	}
	w, err := strconv.Atoi(args[1])
	if err != nil || w < 0 || w > config.MaxWeight {
		return ctlCall{}, fmt.Errorf("weight %q: want a whole number 0..%d", args[1], config.MaxWeight)
	}
	return ctlCall{method: http.MethodPut, path: p + "/weight", body: map[string]int{"weight": w},
		show: say("%s/%s: weight %d", vs, rs, w)}, nil
}

func prepareAdd(args []string) (ctlCall, error) {
	if len(args) > 0 && strings.Contains(args[0], "/") { // VS/NAME ADDRESS [WEIGHT]
		vs, name, _ := strings.Cut(args[0], "/")
		args = append([]string{vs, name}, args[1:]...)
	}
	if err := wantArgs(args, 3, 4); err != nil {
		return ctlCall{}, err
	}
	vs, name, addr := args[0], args[1], args[2]
	if vs == "" || name == "" || strings.Contains(name, "/") {
		return ctlCall{}, errors.New("want a virtual service and a new real server name, as in: add web web4 10.0.0.4:80")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return ctlCall{}, fmt.Errorf("address %q: want IP:port", addr)
	}
	body := struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		Weight  *int   `json:"weight,omitempty"`
	}{Name: name, Address: addr}
	weight := "default weight"
	if len(args) == 4 {
		w, err := strconv.Atoi(args[3])
		if err != nil || w < 0 || w > config.MaxWeight {
			return ctlCall{}, fmt.Errorf("weight %q: want a whole number 0..%d", args[3], config.MaxWeight)
		}
		body.Weight = &w
		weight = "weight " + args[3]
	}
	return ctlCall{method: http.MethodPost, path: "/api/v1/services/" + url.PathEscape(vs) + "/servers", body: body,
		show: say("%s/%s: added (%s, %s)", vs, name, addr, weight)}, nil
}

func prepareRemove(args []string) (ctlCall, error) {
	if err := wantArgs(args, 1, 1); err != nil {
		return ctlCall{}, err
	}
	p, vs, rs, err := serverPath(args[0])
	if err != nil {
		return ctlCall{}, err
	}
	return ctlCall{method: http.MethodDelete, path: p, show: say("%s/%s: removed", vs, rs)}, nil
}

func prepareReload(args []string) (ctlCall, error) {
	if err := wantArgs(args, 0, 0); err != nil {
		return ctlCall{}, err
	}
	return ctlCall{method: http.MethodPost, path: "/api/v1/reload", show: say("configuration reloaded")}, nil
}

func prepareStatus(args []string) (ctlCall, error) {
	if err := wantArgs(args, 0, 0); err != nil {
		return ctlCall{}, err
	}
	return ctlCall{method: http.MethodGet, path: "/api/v1/status", show: showStatus}, nil
}

func prepareEvents(args []string) (ctlCall, error) {
	if err := wantArgs(args, 0, 0); err != nil {
		return ctlCall{}, err
	}
	return ctlCall{method: http.MethodGet, path: "/api/v1/events", show: showEvents}, nil
}
