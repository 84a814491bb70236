package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// KernelMetapackage is the Debian package that names the current kernel:
// it depends on the versioned image package (linux-image-6.1.0-N-amd64),
// whose files we unpack.
const KernelMetapackage = "linux-image-amd64"

// Kernel is a Debian kernel image package unpacked (never installed) in the
// cache.
type Kernel struct {
	// Package is the versioned package, e.g. "linux-image-6.1.0-56-amd64".
	Package string
	// Version is its Debian version, e.g. "6.1.192-2"; empty when the kernel
	// comes from FULCRUM_VM_KERNEL_DIR.
	Version string
	// Release is the kernel's `uname -r`, e.g. "6.1.0-56-amd64".
	Release string
	// Image is the path of the bootable kernel (boot/vmlinuz-RELEASE).
	Image string
	// ModuleDir is the path of lib/modules/RELEASE.
	ModuleDir string
}

// CacheDir returns the directory that keeps downloaded kernels between runs:
// $FULCRUM_VM_CACHE if set, else fulcrum-vm in the user's cache directory
// ($XDG_CACHE_HOME, else ~/.cache).
func CacheDir() (string, error) {
	if d := os.Getenv("FULCRUM_VM_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("vm: no cache directory (set FULCRUM_VM_CACHE): %w", err)
	}
	return filepath.Join(d, "fulcrum-vm"), nil
}

// FetchKernel returns the kernel to boot: the unpacked package root named by
// $FULCRUM_VM_KERNEL_DIR if set; else the package linux-image-amd64 depends
// on, from the cache, downloaded with `apt-get download` and unpacked with
// `dpkg-deb -x` the first time. With no apt (or no package lists and not
// root), the newest kernel already in the cache is used. logf reports the
// slow steps.
func FetchKernel(ctx context.Context, cache string, logf func(format string, args ...any)) (*Kernel, error) {
	if d := os.Getenv("FULCRUM_VM_KERNEL_DIR"); d != "" {
		k, err := unpackedKernel(d)
		if err != nil {
			return nil, fmt.Errorf("vm: FULCRUM_VM_KERNEL_DIR: %w", err)
		}
		return k, nil
	}
	pkg, version, err := resolveKernel(ctx, logf)
	if err != nil {
		if k, cerr := newestCached(cache); cerr == nil {
			logf("vm: %v; using the cached %s=%s", err, k.Package, k.Version)
			return k, nil
		}
		return nil, err
	}
	dir := filepath.Join(cache, pkg+"_"+version)
	if k, err := cachedKernel(dir); err == nil {
		k.Package, k.Version = pkg, version
		return k, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("vm: kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cache, ".download-")
	if err != nil {
		return nil, fmt.Errorf("vm: kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	logf("vm: downloading %s=%s into %s", pkg, version, cache)
	if err := run(ctx, tmp, "apt-get", "download", "-q", pkg+"="+version); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("vm: apt-get download %s: no .deb in %s", pkg, tmp)
	}
	root := filepath.Join(tmp, "root")
	if err := run(ctx, tmp, "dpkg-deb", "-x", debs[0], root); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if _, err := unpackedKernel(root); err != nil {
		return nil, fmt.Errorf("vm: %s: %w", debs[0], err)
	}
	// The rename publishes a complete tree at once: a concurrent run either
	// sees none (and downloads too, losing the rename race harmlessly) or
	// all of it.
	if err := os.Rename(root, dir); err != nil {
		if _, cerr := cachedKernel(dir); cerr != nil {
			return nil, fmt.Errorf("vm: kernel cache: %w", err)
		}
	}
	pruneCache(cache, filepath.Base(dir), logf)
	k, err := cachedKernel(dir)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	k.Package, k.Version = pkg, version
	return k, nil
}

// resolveKernel asks apt which versioned image linux-image-amd64 depends on
// and its candidate version. On a machine that never ran apt-get update
// (a fresh CI machine) the lists are empty: as root, update them once.
func resolveKernel(ctx context.Context, logf func(string, ...any)) (pkg, version string, err error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", "", errors.New("no apt-cache: the harness downloads Debian's kernel with apt")
	}
	pkg, version, err = aptKernel(ctx)
	if err != nil && os.Geteuid() == 0 {
		logf("vm: %v: running apt-get update", err)
		if uerr := run(ctx, "", "apt-get", "update", "-qq"); uerr != nil {
			return "", "", fmt.Errorf("vm: %w", uerr)
		}
		pkg, version, err = aptKernel(ctx)
	}
	return pkg, version, err
}

func aptKernel(ctx context.Context) (pkg, version string, err error) {
	out, err := output(ctx, "apt-cache", "depends", "--important", KernelMetapackage)
	if err != nil {
		return "", "", err
	}
	pkg = ParseAptDepends(out, "linux-image-")
	if pkg == "" {
		return "", "", fmt.Errorf("apt-cache depends %s: no linux-image-* dependency (no package lists?)", KernelMetapackage)
	}
	out, err = output(ctx, "apt-cache", "policy", pkg)
	if err != nil {
		return "", "", err
	}
	version = ParseAptCandidate(out)
	if version == "" {
		return "", "", fmt.Errorf("apt-cache policy %s: no candidate version", pkg)
	}
	return pkg, version, nil
}

// ParseAptDepends returns the first "Depends:" package of `apt-cache
// depends` output whose name starts with prefix.
func ParseAptDepends(out []byte, prefix string) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], prefix) {
			return f[1]
		}
	}
	return ""
}

// ParseAptCandidate returns the "Candidate:" version of `apt-cache policy`
// output, or "" if there is none.
func ParseAptCandidate(out []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Candidate:" && f[1] != "(none)" {
			return f[1]
		}
	}
	return ""
}

// cachedKernel returns the kernel unpacked in dir, a cache entry.
func cachedKernel(dir string) (*Kernel, error) {
	k, err := unpackedKernel(dir)
	if err != nil {
		return nil, err
	}
	k.Package, k.Version, _ = strings.Cut(filepath.Base(dir), "_")
	return k, nil
}

// unpackedKernel finds the kernel image and module tree in the root of an
// unpacked linux-image package.
func unpackedKernel(root string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("%s: want one boot/vmlinuz-*, found %d", root, len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	mods := filepath.Join(root, "lib", "modules", release)
	if st, err := os.Stat(mods); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s: no lib/modules/%s", root, release)
	}
	return &Kernel{Release: release, Image: images[0], ModuleDir: mods}, nil
}

// newestCached returns the cached kernel with the highest release.
func newestCached(cache string) (*Kernel, error) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*_*"))
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if k, err := cachedKernel(dirs[i]); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no kernel in %s", cache)
}

// pruneCache removes the other kernels once a new one is unpacked (each is
// about 400 MB unpacked).
func pruneCache(cache, keep string, logf func(string, ...any)) {
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if n := e.Name(); n != keep && strings.HasPrefix(n, "linux-image-") {
			logf("vm: removing the old kernel %s from the cache", n)
			os.RemoveAll(filepath.Join(cache, n))
		}
	}
}

// run runs a command, returning its output in the error if it fails.
func run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
