package admin

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/zap"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// This file is the receiving side of HA sync (issue 7): the Master's
// Pusher (syncclient.go) sends its configuration and its stick-table
// entries to the Backup's admin API, as an admin user of the Backup.
//
//	PUT  /api/v1/sync/config  {"config": "<the whole TOML file>"}   → 200, 409 on a Master, 422 with the problems
//	POST /api/v1/sync/stick   {"entries": [{"service","method","key","server","idle_ms"}]} → 200 {"applied","skipped"}

// Body limits of the sync endpoints, above the API's usual maxBodyBytes: a
// configuration file with many services, and a batch of stick entries
// whose keys (header values, cookies) may be long.
const (
	maxSyncConfigBytes = 8 << 20
	maxSyncStickBytes  = 2 << 20
)

// localTables are the tables of the configuration that describe this node
// rather than the service the pair provides: a push keeps the receiving
// node's own. [ha] holds its interface, priority and peer; [admin] its
// listen address, TLS key pair and the users the peer logs in as (a push
// that replaced them could cut the sync channel itself).
var localTables = []string{"ha", "admin"}

// SyncOptions turns the sync endpoints on (EnableSync).
type SyncOptions struct {
	// ConfigPath is the running configuration file: a pushed configuration,
	// merged with this node's localTables, atomically replaces it and is
	// reloaded with Runtime.Reload, so a later SIGHUP reloads the same.
	// Empty: config pushes are refused (404).
	ConfigPath string
	// Master reports whether this node is the HA Master now; a Master
	// refuses pushes (409), as two Masters must not overwrite each other.
	// Nil: never Master.
	Master func() bool
	// ApplyStick stores a peer's stick-table entries (proxy.Proxy's).
	// Nil: stick batches are refused (404).
	ApplyStick func([]proxy.StickUpdate) (int, error)
}

// syncState is the enabled sync endpoints' state.
type syncState struct {
	opt SyncOptions
	mu  sync.Mutex // one config push at a time
}

// EnableSync turns the sync endpoints on; until then they answer 404. It
// may be called while serving.
func (s *Server) EnableSync(o SyncOptions) {
	s.sync.state.Store(&syncState{opt: o})
}

// bodyLimit is the body size a request may send.
func bodyLimit(r *http.Request) int64 {
	switch r.URL.Path {
	case "/api/v1/sync/config":
		return maxSyncConfigBytes
	case "/api/v1/sync/stick":
		return maxSyncStickBytes
	}
	return maxBodyBytes
}

// syncRoutes registers the sync endpoints.
func (s *Server) syncRoutes(handle func(string, map[string]http.Handler)) {
	handle("/api/v1/sync/config", map[string]http.Handler{http.MethodPut: s.api(s.handleSyncConfig, true)})
	handle("/api/v1/sync/stick", map[string]http.Handler{http.MethodPost: s.api(s.handleSyncStick, true)})
}

// syncRequest is the body of PUT /api/v1/sync/config. The file travels as
// a JSON string so that Basic callers keep the API's CSRF rule (JSON only).
type syncConfigRequest struct {
	Config string `json:"config"`
}

// stickEntryJSON is one stick-table entry on the wire. Its age is relative
// (idle_ms), so the peers' clocks need not agree.
type stickEntryJSON struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	Key     string `json:"key"`
	Server  string `json:"server"`
	IdleMS  int64  `json:"idle_ms"`
}

type syncStickRequest struct {
	Entries []stickEntryJSON `json:"entries"`
}

type syncStickResponse struct {
	Applied int    `json:"applied"`
	Skipped int    `json:"skipped"`
	Error   string `json:"error,omitempty"` // why the first skipped entry was
}

// syncTarget returns the enabled sync state, or refuses.
func (s *Server) syncTarget(need func(*SyncOptions) bool) (*syncState, error) {
	st := s.sync.state.Load()
	if st == nil || !need(&st.opt) {
		return nil, errorf(http.StatusNotFound, "HA sync is not enabled on this node")
	}
	if st.opt.Master != nil && st.opt.Master() {
		return nil, errorf(http.StatusConflict, "this node is the HA Master; it does not take pushes from its peer")
	}
	return st, nil
}

func (s *Server) handleSyncConfig(w http.ResponseWriter, r *http.Request, p principal) error {
	st, err := s.syncTarget(func(o *SyncOptions) bool { return o.ConfigPath != "" })
	if err != nil {
		return err
	}
	var req syncConfigRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	status, err := s.applyPushed(st.opt.ConfigPath, []byte(req.Config))
	s.audit(r, p, "sync_config", st.opt.ConfigPath, err, zap.Int("bytes", len(req.Config)), zap.String("result", status))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
	return nil
}

// applyPushed merges a pushed configuration with the file at path, checks
// it, writes it over the file and reloads. It returns "reloaded", or
// "unchanged" when the merged file is the running one. Problems come back
// as config.Errors (422); a reload that fails restores the previous file.
func (s *Server) applyPushed(path string, pushed []byte) (string, error) {
	local, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("sync config: read the running configuration: %w", err)
	}
	merged, err := mergeLocal(pushed, local)
	if err != nil {
		return "", err
	}
	if _, err := config.Parse(path, merged); err != nil {
		return "", err
	}
	if bytes.Equal(merged, local) {
		return "unchanged", nil
	}
	if err := writeAtomic(path, merged); err != nil {
		return "", err
	}
	if err := s.rt.Reload(); err != nil {
		if werr := writeAtomic(path, local); werr != nil {
			s.log.Error("sync config: cannot restore the previous configuration file", zap.String("config", path), zap.Error(werr))
		}
		return "", err
	}
	return "reloaded", nil
}

// mergeLocal returns pushed with its localTables replaced by those of
// local, as text, so the file keeps the Master's layout and comments. It
// checks the result by decoding: the local tables must come out as local
// has them (they would not if, say, pushed set ha.* keys with dotted keys
// elsewhere).
func mergeLocal(pushed, local []byte) ([]byte, error) {
	var praw map[string]any
	if _, err := toml.Decode(string(pushed), &praw); err != nil {
		return nil, config.Errors{{File: "pushed configuration", Msg: "syntax: " + err.Error()}}
	}
	var lraw map[string]any
	if _, err := toml.Decode(string(local), &lraw); err != nil {
		return nil, fmt.Errorf("sync config: the running configuration file does not parse: %w", err)
	}
	pb, err := splitTables(pushed)
	if err != nil {
		return nil, errorf(http.StatusUnprocessableEntity, "pushed configuration: %v", err)
	}
	lb, err := splitTables(local)
	if err != nil {
		return nil, fmt.Errorf("sync config: the running configuration file: %w", err)
	}
	isLocal := func(b tomlBlock) bool {
		for _, t := range localTables {
			if b.table == t {
				return true
			}
		}
		return false
	}
	var out, own []byte
	for _, b := range lb {
		if isLocal(b) {
			own = append(own, ensureNewline(b.text)...)
		}
	}
	placed := false
	for _, b := range pb {
		if !isLocal(b) {
			out = append(out, b.text...)
			continue
		}
		if !placed { // this node's tables go where the pushed ones began
			out = append(ensureNewline(out), own...)
			placed = true
		}
	}
	if !placed && len(own) > 0 {
		out = append(ensureNewline(out), own...)
	}
	var mraw map[string]any
	if _, err := toml.Decode(string(out), &mraw); err != nil {
		return nil, errorf(http.StatusUnprocessableEntity, "cannot merge this node's [ha] and [admin] into the pushed configuration: %v", err)
	}
	for _, t := range localTables {
		if !reflect.DeepEqual(mraw[t], lraw[t]) {
			return nil, errorf(http.StatusUnprocessableEntity,
				"cannot keep this node's [%s] in the pushed configuration (are %s keys set outside their [%s] table?)", t, t, t)
		}
	}
	return out, nil
}

func ensureNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(b, '\n')
	}
	return b
}

// writeAtomic replaces the file at path with data: a temporary file in the
// same directory, synced and renamed over it, so a crash leaves the old
// file or the new one, never a mix. It keeps the file's mode.
func writeAtomic(path string, data []byte) error {
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".sync-*")
	if err != nil {
		return fmt.Errorf("sync config: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sync config: write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

func (s *Server) handleSyncStick(w http.ResponseWriter, r *http.Request, p principal) error {
	st, err := s.syncTarget(func(o *SyncOptions) bool { return o.ApplyStick != nil })
	if err != nil {
		return err
	}
	var req syncStickRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	now := s.now()
	batch := make([]proxy.StickUpdate, len(req.Entries))
	for i, e := range req.Entries {
		batch[i] = proxy.StickUpdate{Service: e.Service, Method: e.Method, Key: e.Key, Server: e.Server,
			Used: now.Add(-time.Duration(max(e.IdleMS, 0)) * time.Millisecond)}
	}
	applied, err := st.opt.ApplyStick(batch)
	resp := syncStickResponse{Applied: applied, Skipped: len(batch) - applied}
	if err != nil {
		resp.Error = err.Error()
		if n := s.sync.stickSkips.Add(1); n == 1 || n%1000 == 0 { // a peer with another config skips a lot
			s.log.Warn("sync: stick entries skipped", zap.String("user", p.user), zap.Int("skipped", resp.Skipped),
				zap.Uint64("batches_with_skips", n), zap.Error(err))
		}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// syncFields are the Server's sync state.
type syncFields struct {
	state      atomic.Pointer[syncState] // nil until EnableSync
	stickSkips atomic.Uint64             // stick batches with skipped entries
}
