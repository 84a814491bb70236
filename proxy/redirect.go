package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
)

// redirector is a plain-HTTP listener (tls.redirect_http) that sends every
// request to the same place over https: a permanent redirect that keeps the
// method (308), as HAProxy's "redirect scheme https" does with code 308.
type redirector struct {
	addr   string
	srv    *http.Server
	target atomic.Pointer[string] // ":port" of the https VIP, or "" for 443
}

// wantRedirects returns the redirect listeners cfg asks for, by listen key,
// with the https port each redirects to.
func wantRedirects(cfg *config.Config) map[string]*redirector {
	want := make(map[string]*redirector)
	for _, vs := range cfg.VirtualServices {
		if vs.TLS.RedirectHTTP == "" || len(vs.TLS.Certificates) == 0 || len(vs.Listen) == 0 {
			continue
		}
		_, port, _ := net.SplitHostPort(vs.Listen[0])
		target := ":" + port
		if port == "443" {
			target = ""
		}
		r := &redirector{addr: vs.TLS.RedirectHTTP}
		r.target.Store(&target)
		want[listenKey(vs.TLS.RedirectHTTP)] = r
	}
	return want
}

// applyRedirects binds the redirect listeners cfg wants and closes the
// others; an address that stays keeps its listener (its target may change).
// p.mu is held.
func (p *Proxy) applyRedirects(cfg *config.Config) error {
	want := wantRedirects(cfg)
	var bound []*redirector
	for k, r := range want {
		if old := p.redirects[k]; old != nil {
			old.target.Store(r.target.Load())
			want[k] = old
			continue
		}
		ln, err := listenFreebind(r.addr)
		if err != nil {
			for _, b := range bound {
				b.srv.Close()
			}
			return fmt.Errorf("tls.redirect_http: listen %s: %w", r.addr, err)
		}
		r.start(ln, p.log)
		bound = append(bound, r)
	}
	for k, r := range p.redirects {
		if want[k] != r {
			r.srv.Close()
		}
	}
	p.redirects = want
	return nil
}

func (r *redirector) start(ln net.Listener, log *zap.Logger) {
	r.srv = &http.Server{
		Handler:           http.HandlerFunc(r.redirect),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("redirect")),
	}
	go func() {
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("redirect listener", zap.String("listen", r.addr), zap.Error(err))
		}
	}()
}

// redirect answers one request with the https address of the same thing.
func (r *redirector) redirect(w http.ResponseWriter, req *http.Request) {
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" || strings.ContainsAny(host, "/\\@ ") {
		http.Error(w, "400 Bad Request: missing or bad Host\n", http.StatusBadRequest)
		return
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	w.Header().Set("Connection", "close")
	http.Redirect(w, req, "https://"+host+*r.target.Load()+req.URL.RequestURI(), http.StatusPermanentRedirect)
}

func (p *Proxy) closeRedirects(ctx context.Context) {
	for k, r := range p.redirects {
		r.srv.Shutdown(ctx)
		delete(p.redirects, k)
	}
}
