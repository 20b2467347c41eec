package vmtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// CPIOWriter writes a cpio archive in the "newc" format (magic 070701), the
// format the Linux kernel unpacks as an initramfs. Every entry gets mtime 0,
// uid and gid 0 and its own inode number, so equal input makes equal bytes.
// Missing parent directories are written on demand with mode 0755, because
// the kernel does not create them while it unpacks.
type CPIOWriter struct {
	w      io.Writer
	ino    uint32
	dirs   map[string]bool
	names  map[string]bool
	closed bool
	err    error
}

// NewCPIOWriter returns a writer of a newc archive to w. Close writes the
// trailer; it does not close w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, dirs: map[string]bool{".": true}, names: map[string]bool{}}
}

// ErrBadArchiveName is returned for names that are absolute, not clean,
// climb out with "..", contain a NUL byte, or were already written.
var ErrBadArchiveName = errors.New("vmtest: bad cpio entry name")

const (
	cpioTypeFile    = 0o100000
	cpioTypeDir     = 0o040000
	cpioTypeSymlink = 0o120000
	cpioTypeChar    = 0o020000
	cpioMaxSize     = 1<<32 - 1
)

type cpioEntry struct {
	name                 string
	mode                 uint32
	nlink                uint32
	size                 int64
	rdevMajor, rdevMinor uint32
}

// AddDir writes a directory entry.
func (c *CPIOWriter) AddDir(name string, perm fs.FileMode) error {
	if err := c.prepare(name); err != nil {
		return err
	}
	c.dirs[name] = true
	return c.entry(cpioEntry{name: name, mode: cpioTypeDir | uint32(perm.Perm()), nlink: 2}, nil)
}

// AddFile writes a regular file of exactly size bytes read from r; a
// shorter r is an error, bytes beyond size are not read.
func (c *CPIOWriter) AddFile(name string, perm fs.FileMode, size int64, r io.Reader) error {
	if size < 0 || size > cpioMaxSize {
		return fmt.Errorf("vmtest: cpio entry %s: size %d does not fit the newc format", name, size)
	}
	if err := c.prepare(name); err != nil {
		return err
	}
	return c.entry(cpioEntry{name: name, mode: cpioTypeFile | uint32(perm.Perm()), nlink: 1, size: size}, r)
}

// AddBytes writes a regular file holding data.
func (c *CPIOWriter) AddBytes(name string, perm fs.FileMode, data []byte) error {
	return c.AddFile(name, perm, int64(len(data)), bytes.NewReader(data))
}

// AddSymlink writes a symbolic link to target.
func (c *CPIOWriter) AddSymlink(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("%w: symlink %s has target %q", ErrBadArchiveName, name, target)
	}
	if err := c.prepare(name); err != nil {
		return err
	}
	return c.entry(cpioEntry{name: name, mode: cpioTypeSymlink | 0o777, nlink: 1, size: int64(len(target))}, strings.NewReader(target))
}

// AddCharDevice writes a character device node, such as dev/console (5, 1).
func (c *CPIOWriter) AddCharDevice(name string, perm fs.FileMode, major, minor uint32) error {
	if err := c.prepare(name); err != nil {
		return err
	}
	return c.entry(cpioEntry{name: name, mode: cpioTypeChar | uint32(perm.Perm()), nlink: 1, rdevMajor: major, rdevMinor: minor}, nil)
}

// Close writes the trailer entry. The archive is complete only after Close
// returned nil.
func (c *CPIOWriter) Close() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return nil
	}
	c.closed = true
	c.ino = 0
	return c.write(cpioEntry{name: "TRAILER!!!", nlink: 1}, nil)
}

// prepare checks name and writes the directories above it.
func (c *CPIOWriter) prepare(name string) error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return errors.New("vmtest: cpio writer is closed")
	}
	if name == "" || name == "." || path.IsAbs(name) || path.Clean(name) != name ||
		name == ".." || strings.HasPrefix(name, "../") || strings.IndexByte(name, 0) >= 0 || name == "TRAILER!!!" {
		return fmt.Errorf("%w: %q", ErrBadArchiveName, name)
	}
	if c.names[name] {
		return fmt.Errorf("%w: %q written twice", ErrBadArchiveName, name)
	}
	parent := path.Dir(name)
	if !c.dirs[parent] {
		if c.names[parent] {
			return fmt.Errorf("%w: parent of %q is not a directory", ErrBadArchiveName, name)
		}
		if err := c.AddDir(parent, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (c *CPIOWriter) entry(e cpioEntry, r io.Reader) error {
	c.names[e.name] = true
	c.ino++
	return c.write(e, r)
}

// write emits one header, the name and the data, each padded to four bytes.
func (c *CPIOWriter) write(e cpioEntry, r io.Reader) error {
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, e.mode, 0, 0, e.nlink, 0, uint32(e.size), 0, 0, e.rdevMajor, e.rdevMinor, len(e.name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(e.name)+4)
	buf = append(buf, hdr...)
	buf = append(buf, e.name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := c.w.Write(buf); err != nil {
		c.err = fmt.Errorf("vmtest: write cpio: %w", err)
		return c.err
	}
	if e.size > 0 {
		n, err := io.CopyN(c.w, r, e.size)
		if err != nil {
			c.err = fmt.Errorf("vmtest: cpio entry %s: wrote %d of %d bytes: %w", e.name, n, e.size, err)
			return c.err
		}
		if p := pad4(int(e.size % 4)); p > 0 {
			if _, err := c.w.Write(make([]byte, p)); err != nil {
				c.err = fmt.Errorf("vmtest: write cpio: %w", err)
				return c.err
			}
		}
	}
	return nil
}

func pad4(n int) int { return (4 - n%4) % 4 }
