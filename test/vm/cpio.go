package vm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
)

// CPIOWriter writes a cpio archive in the "newc" (SVR4, no CRC) format, the
// only one the kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte
// ASCII header, the NUL-terminated name padded to 4 bytes, the data padded
// to 4 bytes, and a last entry named "TRAILER!!!".
//
// Parent directories are written before an entry that needs them (the kernel
// does not create them), and a path is written at most once.
type CPIOWriter struct {
	w    io.Writer
	ino  uint32
	seen map[string]bool
	err  error
}

// NewCPIOWriter returns a writer of a newc archive to w. Close writes the
// trailer; it does not close w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, seen: map[string]bool{".": true, "": true}}
}

// cpio mode bits (stat.h): the type is in the top bits of the mode field.
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
)

// Dir writes a directory (and its missing parents).
func (c *CPIOWriter) Dir(name string, perm fs.FileMode) error {
	name, err := c.clean(name)
	if err != nil {
		return err
	}
	if c.seen[name] {
		return nil
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	return c.entry(name, cpioDir|uint32(perm.Perm()), 2, nil)
}

// File writes a regular file with the given contents.
func (c *CPIOWriter) File(name string, perm fs.FileMode, data []byte) error {
	return c.leaf(name, cpioRegular|uint32(perm.Perm()), data)
}

// Symlink writes a symbolic link name → target.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.leaf(name, cpioSymlink|0o777, []byte(target))
}

// leaf writes a file or a link, once, after its missing parents.
func (c *CPIOWriter) leaf(name string, mode uint32, data []byte) error {
	name, err := c.clean(name)
	if err != nil {
		return err
	}
	if c.seen[name] {
		return fmt.Errorf("cpio: %s: written twice", name)
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	return c.entry(name, mode, 1, data)
}

// Has reports whether name was written.
func (c *CPIOWriter) Has(name string) bool {
	name, err := c.clean(name)
	return err == nil && c.seen[name]
}

// Close writes the trailer entry.
func (c *CPIOWriter) Close() error {
	if c.err != nil {
		return c.err
	}
	return c.entry("TRAILER!!!", 0, 1, nil)
}

// clean makes name relative to the archive's root ("bin/sh", as
// `find . | cpio` writes it without the "./"); a ".." cannot climb above it.
func (c *CPIOWriter) clean(name string) (string, error) {
	n := path.Clean("/" + name)[1:]
	if n == "" {
		return "", fmt.Errorf("cpio: bad name %q", name)
	}
	return n, nil
}

func (c *CPIOWriter) parents(name string) error {
	dir := path.Dir(name)
	if c.seen[dir] {
		return nil
	}
	return c.Dir(dir, 0o755)
}

func (c *CPIOWriter) entry(name string, mode, nlink uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	c.ino++
	// Fields in order: magic, ino, mode, uid, gid, nlink, mtime, filesize,
	// devmajor, devminor, rdevmajor, rdevminor, namesize (with the NUL),
	// check. mtime 0 keeps the archive reproducible.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	if len(hdr) != 110 {
		c.err = errors.New("cpio: internal error: header is not 110 bytes")
		return c.err
	}
	buf := make([]byte, 0, len(hdr)+len(name)+4+len(data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	if _, err := c.w.Write(buf); err != nil {
		c.err = fmt.Errorf("cpio: write %s: %w", name, err)
	}
	return c.err
}

// pad4 pads b with NULs to a multiple of 4 bytes. Every entry starts at a
// multiple of 4, so padding the running entry is enough.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
