package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleTree is a kernel's module directory, lib/modules/VERSION, as
// unpacked from a Debian linux-image package. Debian's package ships no
// modules.dep (depmod makes it when the package is installed, and we do not
// install it): a module's dependencies are then read from the "depends=" and
// "softdep=" entries of its own .modinfo section, which is what
// `modinfo -F depends` prints. When a modules.dep is present it is used
// instead.
type ModuleTree struct {
	Dir string

	paths map[string]string   // module name → path under Dir
	dep   map[string][]string // from modules.dep; nil if absent
	alias map[string][]string // from modules.alias; nil if absent
	info  map[string]map[string][]string
}

// OpenModuleTree indexes the modules under dir.
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{Dir: dir, paths: map[string]string{}, info: map[string]map[string][]string{}}
	if f, err := os.Open(filepath.Join(dir, "modules.dep")); err == nil {
		paths, dep, err := ParseModulesDep(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "modules.dep"), err)
		}
		t.paths, t.dep = paths, dep
	} else {
		err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if name := ModuleName(p); !d.IsDir() && name != "" {
				rel, _ := filepath.Rel(dir, p)
				t.paths[name] = rel
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("index kernel modules: %w", err)
		}
	}
	if f, err := os.Open(filepath.Join(dir, "modules.alias")); err == nil {
		t.alias = ParseModulesAlias(f)
		f.Close()
	}
	if len(t.paths) == 0 {
		return nil, fmt.Errorf("%s: no kernel modules found", dir)
	}
	return t, nil
}

// Path returns the path of module name's file, or "" if there is none.
func (t *ModuleTree) Path(name string) string {
	p, ok := t.paths[normalizeModule(name)]
	if !ok {
		return ""
	}
	return filepath.Join(t.Dir, p)
}

// LoadOrder returns the modules to insmod, dependencies first, so that the
// wanted modules load. A soft dependency "pre:" (libcrc32c wants the crc32c
// crypto algorithm loaded before it: a missing one fails its init) is loaded
// before its module when it names a module, or an alias that modules.alias
// or the crypto API's "NAME_generic" convention resolves.
func (t *ModuleTree) LoadOrder(wanted []string) ([]string, error) {
	return LoadOrder(wanted, t.deps)
}

func (t *ModuleTree) deps(name string) ([]string, error) {
	if _, ok := t.paths[name]; !ok {
		return nil, fmt.Errorf("no kernel module %q in %s", name, t.Dir)
	}
	info, err := t.modinfo(name)
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, s := range info["softdep"] {
		pre, _ := ParseSoftdep(s)
		for _, p := range pre {
			if m := t.resolve(p); m != "" {
				deps = append(deps, m)
			}
		}
	}
	if t.dep != nil {
		return append(deps, t.dep[name]...), nil
	}
	for _, s := range info["depends"] {
		for _, d := range strings.Split(s, ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, normalizeModule(d))
			}
		}
	}
	return deps, nil
}

// resolve finds the module that provides name: a module of that name, the
// first module of modules.alias, or NAME_generic (the crypto API's
// portable implementation, as crc32c_generic for "crc32c").
func (t *ModuleTree) resolve(name string) string {
	name = normalizeModule(name)
	if _, ok := t.paths[name]; ok {
		return name
	}
	if ms := t.alias[name]; len(ms) > 0 {
		return ms[0]
	}
	if _, ok := t.paths[name+"_generic"]; ok {
		return name + "_generic"
	}
	return ""
}

func (t *ModuleTree) modinfo(name string) (map[string][]string, error) {
	if info, ok := t.info[name]; ok {
		return info, nil
	}
	ko, err := ReadModule(t.Path(name))
	if err != nil {
		return nil, err
	}
	info, err := ParseModinfo(ko)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Path(name), err)
	}
	t.info[name] = info
	return info, nil
}

// LoadOrder orders the wanted modules and their dependencies (given by deps)
// so that each comes after everything it depends on, as modprobe loads them.
// The order is stable: wanted modules in the order given, each preceded by
// its not yet listed dependencies in the order deps lists them.
func LoadOrder(wanted []string, deps func(name string) ([]string, error)) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		name = normalizeModule(name)
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, name), " → "))
		}
		state[name] = visiting
		ds, err := deps(name)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ModuleName returns the module name of a module file name
// ("kernel/net/ipv4/ip_tunnel.ko.xz" → "ip_tunnel"), or "" if file is not a
// module. Names are normalized: the kernel treats '-' and '_' alike
// (crc32c-intel.ko is module crc32c_intel).
func ModuleName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(base, ext) {
			return normalizeModule(strings.TrimSuffix(base, ext))
		}
	}
	return ""
}

func normalizeModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

// ParseModulesDep reads depmod's modules.dep: one line per module,
// "PATH: DEP_PATH DEP_PATH …", the dependencies listed in the order
// modprobe removes them (so each after the ones that need it). It returns
// each module's path and its dependencies' names.
func ParseModulesDep(r io.Reader) (paths map[string]string, deps map[string][]string, err error) {
	paths, deps = map[string]string{}, map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		name := ModuleName(file)
		if !ok || name == "" {
			return nil, nil, fmt.Errorf("line %d: want \"module.ko: dependency.ko …\", got %q", n, line)
		}
		paths[name] = file
		var ds []string
		for _, f := range strings.Fields(rest) {
			d := ModuleName(f)
			if d == "" {
				return nil, nil, fmt.Errorf("line %d: %q is not a module file", n, f)
			}
			ds = append(ds, d)
		}
		// modules.dep lists the full closure, deepest last; reversed, each
		// comes before the modules that need it.
		for i, j := 0, len(ds)-1; i < j; i, j = i+1, j-1 {
			ds[i], ds[j] = ds[j], ds[i]
		}
		deps[name] = ds
	}
	return paths, deps, sc.Err()
}

// ParseModulesAlias reads depmod's modules.alias ("alias ALIAS MODULE"
// lines) into alias → modules. Wildcard aliases (device IDs) are skipped.
func ParseModulesAlias(r io.Reader) map[string][]string {
	m := map[string][]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "alias" || strings.ContainsAny(f[1], "*?[") {
			continue
		}
		a := normalizeModule(f[1])
		m[a] = append(m[a], normalizeModule(f[2]))
	}
	return m
}

// ParseModinfo returns the key=value entries of a module's .modinfo ELF
// section (NUL-separated strings), as modinfo prints them.
func ParseModinfo(ko []byte) (map[string][]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	info := map[string][]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte("=")); ok {
			info[string(k)] = append(info[string(k)], string(v))
		}
	}
	return info, nil
}

// ParseSoftdep splits a "softdep=" value ("pre: crc32c post: foo") into its
// pre and post module lists (modprobe.d(5)).
func ParseSoftdep(s string) (pre, post []string) {
	var cur *[]string
	for _, f := range strings.Fields(s) {
		switch f {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, f)
			}
		}
	}
	return pre, post
}

// ReadModule returns a module file's ELF bytes, decompressing .ko.gz (in
// Go), .ko.xz and .ko.zst (with the xz and zstd commands): busybox's insmod
// hands the file to init_module(2) as it is, and a kernel without
// CONFIG_MODULE_DECOMPRESS cannot load a compressed one.
func ReadModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.xz"):
		return decompressWith(path, "xz")
	case strings.HasSuffix(path, ".ko.zst"):
		return decompressWith(path, "zstd")
	}
	return nil, fmt.Errorf("%s: not a kernel module file", path)
}

func decompressWith(path, tool string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w: %s (install %s)", tool, path, err, strings.TrimSpace(stderr.String()), tool)
	}
	return out, nil
}
