package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	dir, err := os.MkdirTemp("", "fulcrum-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := demoCertificate(dir)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum demo: self-signed certificate: %v\n", err)
		return 1
	}
	text := strings.NewReplacer("@DEMO_CERT@", certFile, "@DEMO_KEY@", keyFile).Replace(string(demoConfig))
	cfg, err := config.Parse("demo.toml (embedded)", []byte(text))
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
  curl -k https://%s/  (the same farm over HTTPS, self-signed certificate)
  client -insecure https://%s/  (over HTTP/3: quic-go's example client;
    go install github.com/quic-go/quic-go/example/client@v0.65.0)
  open http://%s/ for the web UI (user admin, password demo): take a real
    server offline and watch curl skip it
  FULCRUM_PASSWORD=demo fulcrum ctl -url http://%s status
Press Ctrl-C to stop.

`, vs.Name, vs.Listen[0], len(vs.RealServers), demoNames(vs), vs.Listen[0], vs.Listen[0], cfg.VirtualServices[1].Listen[0], cfg.VirtualServices[1].Listen[0], cfg.Admin.Listen, cfg.Admin.Listen)
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

// demoCertificate writes a self-signed ECDSA P-256 certificate for
// 127.0.0.1 and localhost, valid for a week, and its key into dir.
func demoCertificate(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "fulcrum demo", Organization: []string{"Fulcrum demo (self-signed)"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "demo.pem"), filepath.Join(dir, "demo.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
