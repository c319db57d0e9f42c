package kvmhost

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// cpioWriter writes an uncompressed newc archive, the format the kernel
// unpacks into its initial root file system.
type cpioWriter struct {
	w    *bufio.Writer
	n    int64
	ino  uint32
	dirs map[string]bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), ino: 1, dirs: map[string]bool{".": true, "/": true}}
}

func (c *cpioWriter) header(name string, mode uint32, size int64) error {
	name = strings.TrimPrefix(name, "/")
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if _, err := c.w.WriteString(hdr + name + "\x00"); err != nil {
		return err
	}
	c.n += int64(len(hdr) + len(name) + 1)
	return c.pad()
}

func (c *cpioWriter) pad() error {
	for c.n%4 != 0 {
		if err := c.w.WriteByte(0); err != nil {
			return err
		}
		c.n++
	}
	return nil
}

// mkdirAll adds every missing parent directory of name.
func (c *cpioWriter) mkdirAll(dir string) error {
	dir = path.Clean("/" + dir)
	if c.dirs[dir] {
		return nil
	}
	if err := c.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	c.dirs[dir] = true
	return c.header(dir, 0o040755, 0)
}

// addBytes adds a regular file with the given content and permission bits.
func (c *cpioWriter) addBytes(name string, perm uint32, data []byte) error {
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := c.header(name, 0o100000|perm, int64(len(data))); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	c.n += int64(len(data))
	return c.pad()
}

// addFile copies a host file into the archive under name, keeping its
// permission bits.
func (c *cpioWriter) addFile(name, hostPath string) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", hostPath)
	}
	if err := c.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := c.header(name, 0o100000|uint32(st.Mode().Perm()), st.Size()); err != nil {
		return err
	}
	n, err := io.Copy(c.w, f)
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("%s: changed size while archiving", hostPath)
	}
	c.n += n
	return c.pad()
}

// close writes the trailer and flushes.
func (c *cpioWriter) close() error {
	if err := c.header("TRAILER!!!", 0, 0); err != nil {
		return err
	}
	return c.w.Flush()
}

// sortedKeys makes archives reproducible for the same inputs.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
