package admin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// uiFiles is the web UI: plain HTML, CSS and JavaScript with no build step
// and nothing loaded from elsewhere (the CSP forbids it anyway).
//
//go:embed ui
var uiFiles embed.FS

// contentTypes of the UI's files, set explicitly rather than from the host's
// MIME tables, which a minimal system may lack.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// asset is one UI file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// assets are the UI files by name, read once from the binary.
var assets = func() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(uiFiles, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := uiFiles.ReadFile(p)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		out[path.Base(p)] = asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("admin: read embedded UI: " + err.Error())
	}
	return out
}()

// uiRoutes serves the single page at / and its files at /assets/NAME.
// Pages are chosen in the browser (#/ and #/events).
func (s *Server) uiRoutes(mux *http.ServeMux, handle func(string, map[string]http.Handler)) {
	handle("/{$}", map[string]http.Handler{http.MethodGet: serveAsset("index.html")})
	handle("/assets/{name}", map[string]http.Handler{http.MethodGet: http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			if name == "index.html" {
				http.Redirect(w, r, "/", http.StatusMovedPermanently)
				return
			}
			serveAsset(name).ServeHTTP(w, r)
		})})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found: %s", r.URL.Path)
	})
}

// serveAsset serves one UI file. Browsers revalidate on each load (no-cache
// with an ETag), so an upgraded binary's UI is used at once.
func serveAsset(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[name]
		if !ok {
			writeError(w, http.StatusNotFound, "not found: %s", r.URL.Path)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag) // ServeContent answers If-None-Match with 304
		h.Set("Content-Type", a.ctype)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
	})
}
