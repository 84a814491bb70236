package vm

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
)

// cpioEntry is one entry read back by readCPIO.
type cpioEntry struct {
	name string
	mode uint32
	data string
}

// readCPIO parses a newc archive (the format as the kernel reads it in
// init/initramfs.c), checking magic, alignment and the trailer.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d: field %d: %v", off, i, err)
		}
		return int(v)
	}
	for {
		if off%4 != 0 {
			t.Fatalf("entry at offset %d is not 4-byte aligned", off)
		}
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("offset %d: magic %q", off, b[off:off+6])
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		dataOff := (off + 110 + namesize + 3) &^ 3
		data := string(b[dataOff : dataOff+size])
		off = (dataOff + size + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioEntry{name, uint32(mode), data})
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	steps := []error{
		w.File("/usr/lib/x86_64-linux-gnu/libc.so.6", 0o755, []byte("ELF…")), // parents made first
		w.Symlink("bin/sh", "busybox"),
		w.Dir("proc", 0o555),
		w.Dir("proc", 0o555), // a directory twice is fine
		w.File("init", 0o755, []byte("#!/bin/sh\n")),
		w.File("empty", 0o644, nil),
		w.File("../../etc/x", 0o600, []byte("abc")), // cannot climb out
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := w.File("init", 0o755, nil); err == nil {
		t.Error("a file written twice: no error")
	}
	if !w.Has("/usr/lib") || w.Has("nope") {
		t.Error("Has")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range readCPIO(t, buf.Bytes()) {
		got = append(got, fmt.Sprintf("%s %o %q", e.name, e.mode, e.data))
	}
	want := []string{
		`usr 40755 ""`,
		`usr/lib 40755 ""`,
		`usr/lib/x86_64-linux-gnu 40755 ""`,
		`usr/lib/x86_64-linux-gnu/libc.so.6 100755 "ELF…"`,
		`bin 40755 ""`,
		`bin/sh 120777 "busybox"`,
		`proc 40555 ""`,
		`init 100755 "#!/bin/sh\n"`,
		`empty 100644 ""`,
		`etc 40755 ""`,
		`etc/x 100600 "abc"`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("entries:\n%q\nwant:\n%q", got, want)
	}
}
