package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxRSS bounds fulcrum's resident memory while it streams a body far
// larger than that: bodies must flow through, not be buffered.
const maxRSS = 64 << 20

// transferSize is the body size of the streaming tests: 256 MiB, 32 MiB
// with -short, 2 GiB with FULCRUM_E2E_LARGE=1.
func transferSize() int64 {
	switch {
	case os.Getenv("FULCRUM_E2E_LARGE") == "1":
		return 2 << 30
	case testing.Short():
		return 32 << 20
	}
	return 256 << 20
}

// TestStreamUpload sends a large body through the proxy, checking that it
// arrives whole and unchanged and that the proxy's memory stays bounded.
func TestStreamUpload(t *testing.T) {
	needCurl(t)
	size := transferSize()
	tests := []struct {
		name    string
		chunked bool
		args    func(t *testing.T) (args []string, stdin io.Reader, wantSHA string)
	}{
		{
			// A sparse file, so that curl sends a Content-Length.
			name: "content-length",
			args: func(t *testing.T) ([]string, io.Reader, string) {
				path := markedFile(t, size)
				return []string{"-T", path}, nil, sha(t, newMarkedZeros(size))
			},
		},
		{
			// From a pipe: curl sends it chunked.
			name:    "chunked",
			chunked: true,
			args: func(t *testing.T) ([]string, io.Reader, string) {
				return []string{"-T", "-"}, randomStream(1, size), sha(t, randomStream(1, size))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got struct {
				n       int64
				sum     string
				chunked bool
				err     error
			}
			b := newHTTPBackend(t, "sink", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, err := io.Copy(h, r.Body)
				mu.Lock()
				got.n, got.sum, got.err = n, hex.EncodeToString(h.Sum(nil)), err
				got.chunked = len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"
				mu.Unlock()
				fmt.Fprintf(w, "%d", n)
			}))
			vip := freeAddr(t)
			f := startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})
			args, stdin, wantSHA := tt.args(t)

			r := streamed(t, f, size, func() curlResult {
				return curlIO(t, stdin, nil, append(args, "-X", "POST", "http://"+vip+"/upload")...)
			})
			mu.Lock()
			defer mu.Unlock()
			if got.err != nil {
				t.Errorf("real server reading the body: %v", got.err)
			}
			if got.n != size || got.sum != wantSHA {
				t.Errorf("real server got %d bytes sha256 %s, want %d bytes sha256 %s", got.n, got.sum, size, wantSHA)
			}
			if got.chunked != tt.chunked {
				t.Errorf("real server saw chunked = %v, want %v (framing changed)", got.chunked, tt.chunked)
			}
			if r.stdout != strconv.FormatInt(size, 10) {
				t.Errorf("response %q, want %q", r.stdout, strconv.FormatInt(size, 10))
			}
		})
	}
}

// TestStreamDownload is TestStreamUpload the other way.
func TestStreamDownload(t *testing.T) {
	needCurl(t)
	size := transferSize()
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		t.Run(name, func(t *testing.T) {
			b := newHTTPBackend(t, "source", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
				}
				io.Copy(w, randomStream(2, size)) // without a length, net/http chunks
			}))
			vip := freeAddr(t)
			f := startFulcrum(t, config{services: []service{{listen: []string{vip}, real: []real{b.real("")}}}})

			h := &countingHash{h: sha256.New()}
			r := streamed(t, f, size, func() curlResult {
				return curlIO(t, nil, h, "-D", "/dev/stderr", "http://"+vip+"/download")
			})
			if want := sha(t, randomStream(2, size)); h.n != size || h.sum() != want {
				t.Errorf("client got %d bytes sha256 %s, want %d bytes sha256 %s", h.n, h.sum(), size, want)
			}
			head := strings.ToLower(r.stderr)
			if gotChunked := strings.Contains(head, "transfer-encoding: chunked"); gotChunked != chunked {
				t.Errorf("client saw chunked = %v, want %v (framing changed); head:\n%s", gotChunked, chunked, r.stderr)
			}
		})
	}
}

// streamed runs a curl transfer of size bytes through f while sampling f's
// resident memory: curl must succeed, the rate and peak are logged, and the
// peak must stay under maxRSS.
func streamed(t *testing.T, f *fulcrum, size int64, run func() curlResult) curlResult {
	t.Helper()
	rss := sampleRSS(t, f.pid())
	start := time.Now()
	r := run()
	elapsed := time.Since(start)
	peak, samples := rss()
	if r.code != 0 {
		t.Fatalf("curl: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("%d MiB in %s (%.0f MiB/s); fulcrum VmRSS peak %.1f MiB over %d samples",
		size>>20, elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds(), float64(peak)/(1<<20), samples)
	if peak > maxRSS {
		t.Errorf("fulcrum VmRSS reached %.1f MiB while streaming, want < %d MiB", float64(peak)/(1<<20), maxRSS>>20)
	}
	return r
}

// randomStream returns n deterministic pseudo-random bytes.
func randomStream(seed uint64, n int64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return bufio.NewReaderSize(io.LimitReader(rand.NewChaCha8(s), n), 64<<10)
}

// markerEvery is the spacing of the markers in a marked file: a sparse file
// is fast to make and read, and the markers (each block's offset) make a
// lost, repeated or reordered block change the checksum.
const markerEvery = 1 << 20

// markedFile creates a sparse file of size bytes holding newMarkedZeros.
func markedFile(t *testing.T, size int64) string {
	path := filepath.Join(t.TempDir(), "upload.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	var m [8]byte
	for off := int64(0); off+8 <= size; off += markerEvery {
		binary.BigEndian.PutUint64(m[:], uint64(off))
		if _, err := f.WriteAt(m[:], off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// markedZeros reads as zeros with each markerEvery-byte block starting with
// its offset (8 bytes, big-endian).
type markedZeros struct{ off, size int64 }

func newMarkedZeros(size int64) io.Reader { return &markedZeros{size: size} }

func (m *markedZeros) Read(p []byte) (int, error) {
	if m.off >= m.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), m.size-m.off)]
	clear(p)
	var mark [8]byte
	for blk := m.off / markerEvery * markerEvery; blk < m.off+int64(len(p)); blk += markerEvery {
		if blk+8 > m.size {
			break
		}
		binary.BigEndian.PutUint64(mark[:], uint64(blk))
		for i := range int64(8) {
			if pos := blk + i - m.off; pos >= 0 && pos < int64(len(p)) {
				p[pos] = mark[i]
			}
		}
	}
	m.off += int64(len(p))
	return len(p), nil
}

func sha(t *testing.T, r io.Reader) string {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (c *countingHash) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// sampleRSS samples the VmRSS of process pid every 10ms until the returned
// function is called, which reports the peak in bytes and the sample count.
func sampleRSS(t *testing.T, pid int) func() (peak int64, samples int) {
	t.Helper()
	if _, err := readRSS(pid); err != nil {
		t.Fatalf("read fulcrum's VmRSS: %v", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var peak int64
	var samples int
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := readRSS(pid); err == nil {
				peak = max(peak, rss)
				samples++
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int64, int) {
		close(stop)
		<-done
		return peak, samples
	}
}

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
