package vm

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseModulesDepLoadOrder(t *testing.T) {
	f, err := os.Open("testdata/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	paths, deps, err := ParseModulesDep(f)
	if err != nil {
		t.Fatal(err)
	}
	if p := paths["crc32c_intel"]; p != "kernel/arch/x86/crypto/crc32c-intel.ko.xz" {
		t.Errorf("path of crc32c_intel: %q", p)
	}
	lookup := func(name string) ([]string, error) {
		if _, ok := paths[name]; !ok {
			return nil, os.ErrNotExist
		}
		return deps[name], nil
	}
	tests := []struct {
		name   string
		wanted []string
		want   []string
	}{
		{"ipvs schedulers share their dependencies",
			[]string{"ip_vs_rr", "ip_vs_mh"},
			[]string{"libcrc32c", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack", "ip_vs", "ip_vs_rr", "ip_vs_mh"}},
		{"tunnels and links",
			[]string{"ipip", "veth", "bridge"},
			[]string{"ip_tunnel", "tunnel4", "ipip", "veth", "llc", "stp", "bridge"}},
		{"a dependency asked for first", []string{"ip_vs", "ip_vs_rr"},
			[]string{"libcrc32c", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack", "ip_vs", "ip_vs_rr"}},
		{"dashes are underscores", []string{"crc32c-intel"}, []string{"crc32c_intel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadOrder(tt.wanted, lookup)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("LoadOrder(%v) = %v, want %v", tt.wanted, got, tt.want)
			}
		})
	}
	if _, err := LoadOrder([]string{"ip_vs_nope"}, lookup); err == nil {
		t.Error("unknown module: no error")
	}
	cycle := func(name string) ([]string, error) {
		return map[string][]string{"a": {"b"}, "b": {"c"}, "c": {"a"}}[name], nil
	}
	if _, err := LoadOrder([]string{"a"}, cycle); err == nil || !strings.Contains(err.Error(), "cycle: a → b → c → a") {
		t.Errorf("cycle: %v", err)
	}
	for _, bad := range []string{"kernel/foo.ko.xz kernel/bar.ko.xz\n", "kernel/a.ko: kernel/readme.txt\n"} {
		if _, _, err := ParseModulesDep(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseModulesDep(%q): no error", bad)
		}
	}
}

// elfModule returns a minimal ELF64 relocatable object with a .modinfo
// section holding the given key=value strings, as a kernel module has.
func elfModule(info ...string) []byte {
	modinfo := []byte(strings.Join(info, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modinfoOff := uint64(ehsize)
	shstrOff := modinfoOff + uint64(len(modinfo))
	shOff := (shstrOff + uint64(len(shstrtab)) + 7) &^ 7
	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, hdr)
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, int(shOff)-b.Len()))
	for _, sh := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: modinfoOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint64(len(shstrtab)), Addralign: 1},
	} {
		binary.Write(&b, binary.LittleEndian, sh)
	}
	return b.Bytes()
}

// A module tree as Debian's package unpacks it: no modules.dep, the
// dependencies in each module's .modinfo.
func TestModuleTreeModinfo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lib", "modules", "6.1.0-test-amd64")
	files := map[string][]string{
		"kernel/net/netfilter/ipvs/ip_vs.ko":    {"license=GPL", "depends=nf_conntrack,libcrc32c", "name=ip_vs"},
		"kernel/net/netfilter/ipvs/ip_vs_rr.ko": {"depends=ip_vs"},
		"kernel/net/netfilter/nf_conntrack.ko":  {"depends=libcrc32c"},
		// libcrc32c's init fails without the crc32c algorithm loaded: a
		// soft dependency on an alias.
		"kernel/lib/libcrc32c.ko":                {"softdep=pre: crc32c", "depends="},
		"kernel/crypto/crc32c_generic.ko":        {"alias=crc32c", "depends="},
		"kernel/arch/x86/crypto/crc32c-intel.ko": {"alias=crc32c", "depends="},
		"kernel/drivers/net/veth.ko.gz":          {"depends="},
	}
	for name, info := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := elfModule(info...)
		if strings.HasSuffix(name, ".gz") {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(data)
			zw.Close()
			data = z.Bytes()
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tree.LoadOrder([]string{"ip_vs_rr", "veth", "crc32c-intel"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"crc32c_generic", "libcrc32c", "nf_conntrack", "ip_vs", "ip_vs_rr", "veth", "crc32c_intel"}
	if !slices.Equal(got, want) {
		t.Fatalf("LoadOrder = %v, want %v", got, want)
	}
	if p := tree.Path("crc32c-intel"); !strings.HasSuffix(p, "kernel/arch/x86/crypto/crc32c-intel.ko") {
		t.Errorf("Path(crc32c-intel) = %q", p)
	}
	ko, err := ReadModule(tree.Path("veth"))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := ParseModinfo(ko); err != nil || info["depends"][0] != "" {
		t.Errorf("modinfo of the decompressed veth: %v, %v", info, err)
	}
	if _, err := tree.LoadOrder([]string{"ip_vs_nope"}); err == nil || !strings.Contains(err.Error(), `no kernel module "ip_vs_nope"`) {
		t.Errorf("unknown module: %v", err)
	}
	if _, err := ParseModinfo([]byte("not elf")); err == nil {
		t.Error("ParseModinfo of garbage: no error")
	}
}

func TestParseSoftdep(t *testing.T) {
	pre, post := ParseSoftdep("pre: crc32c sha256 post: foo")
	if !slices.Equal(pre, []string{"crc32c", "sha256"}) || !slices.Equal(post, []string{"foo"}) {
		t.Errorf("pre %v post %v", pre, post)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/ipv4/ip_tunnel.ko.xz":        "ip_tunnel",
		"kernel/arch/x86/crypto/crc32c-intel.ko": "crc32c_intel",
		"x.ko.zst":                               "x",
		"modules.dep":                            "",
		"kernel/foo.ko.bak":                      "",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}
