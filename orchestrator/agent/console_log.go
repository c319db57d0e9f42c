package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// consoleLog reads one instance's serial console log as one byte stream:
// the rotated copies, oldest first, then console.log, and then what vmm
// appends, across copy-truncate rotations (rotateConsole).
//
// A rotation copies console.log to console.log.1 and truncates it. A
// follower notices it when the log is shorter than what it has sent, or
// no longer holds, just before that position, the bytes it last sent
// (truncated and regrown between two polls). It then finds the copy that
// does hold them (console.log.1, or an older one if several rotations
// passed), sends the rest of it and the newer copies, and reads the log
// from its start again.
type consoleLog struct {
	path string
	keep int
	old  []logPart // rotated copies at open, oldest first
	cur  *os.File  // console.log; nil until it exists
	pos  int64     // bytes of cur sent
	last []byte    // the bytes of cur just before pos (up to lastLen)
}

// lastLen is how many of the bytes sent last identify the position in
// the log: enough that a regrown log or another copy matches by chance
// only if the guest wrote the same 64 bytes at the same offset.
const lastLen = 64

type logPart struct {
	f    *os.File
	size int64
}

// openConsoleLog opens the log and up to keep rotated copies as they are
// at one moment: if a rotation renames files while they are opened, it
// tries again.
func openConsoleLog(path string, keep int) (*consoleLog, error) {
	for attempt := 0; ; attempt++ {
		l, consistent, err := tryOpenConsoleLog(path, keep)
		if err != nil || consistent || attempt == 3 {
			return l, err
		}
		l.close()
	}
}

func tryOpenConsoleLog(path string, keep int) (*consoleLog, bool, error) {
	l := &consoleLog{path: path, keep: keep}
	var err error
	if l.cur, err = os.Open(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("console log: %w", err)
	}
	var infos []os.FileInfo
	for i := 1; i <= keep; i++ {
		f, err := os.Open(fmt.Sprintf("%s.%d", path, i))
		if err != nil {
			break
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			break
		}
		l.old = append([]logPart{{f: f, size: st.Size()}}, l.old...)
		infos = append(infos, st)
	}
	// Consistent if every name still refers to the file opened under it.
	for i, st := range infos {
		now, err := os.Stat(fmt.Sprintf("%s.%d", path, i+1))
		if err != nil || !os.SameFile(st, now) {
			return l, false, nil
		}
	}
	if _, err := os.Stat(fmt.Sprintf("%s.%d", path, len(infos)+1)); err == nil && len(infos) < keep {
		return l, false, nil // a copy appeared behind the last one read
	}
	return l, true, nil
}

func (l *consoleLog) close() {
	for _, p := range l.old {
		p.f.Close()
	}
	if l.cur != nil {
		l.cur.Close()
	}
}

// size is the length of the retained log now.
func (l *consoleLog) size() int64 {
	var n int64
	for _, p := range l.old {
		n += p.size
	}
	if l.cur != nil {
		if st, err := l.cur.Stat(); err == nil {
			n += st.Size()
		}
	}
	return n
}

// sendFrom writes the retained log from offset start to its current end.
func (l *consoleLog) sendFrom(start int64, w io.Writer) error {
	// Note where start falls in console.log, and the bytes before it,
	// before the copies are sent: that may take a while, and a rotation
	// meanwhile is caught up with like one between two polls.
	if l.cur != nil {
		l.pos = start
		for _, p := range l.old {
			l.pos -= p.size
		}
		l.pos = max(l.pos, 0)
		l.last = make([]byte, min(l.pos, lastLen))
		if _, err := l.cur.ReadAt(l.last, l.pos-int64(len(l.last))); err != nil {
			l.last = nil
		}
	}
	for _, p := range l.old {
		if start >= p.size {
			start -= p.size
			continue
		}
		if _, err := io.Copy(w, io.NewSectionReader(p.f, start, p.size-start)); err != nil {
			return err
		}
		start = 0
	}
	for _, p := range l.old {
		p.f.Close()
	}
	l.old = nil
	_, err := l.poll(w)
	return err
}

// sendCur writes console.log from pos to its end. A chunk is sent only if,
// after it was read, the log still holds the bytes sent before it: a
// rotation that truncated the log before the read would otherwise pass off
// the regrown log's bytes as the old one's. Such a chunk is dropped, and
// the next poll catches up from the copy.
func (l *consoleLog) sendCur(w io.Writer) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := l.cur.ReadAt(buf, l.pos)
		if n > 0 {
			if !holdsBytes(l.cur, l.pos, l.last) {
				return nil
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			l.pos += int64(n)
			l.last = append(l.last, buf[max(0, n-lastLen):n]...)
			l.last = l.last[max(0, len(l.last)-lastLen):]
		}
		if errors.Is(err, io.EOF) || n == 0 && err == nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// follow sends what is appended to the log until ctx ends or ended
// reports that nothing more will come (the instance was deleted). pace
// says how long to wait before each check, and gives a channel that cuts
// the wait short (input was typed: its echo is coming).
func (l *consoleLog) follow(ctx context.Context, ended func() bool, pace func() (time.Duration, <-chan struct{}), w io.Writer, flush func()) error {
	for {
		d, wake := pace()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
		sent, err := l.poll(w)
		if err != nil {
			return err
		}
		if sent {
			flush()
		}
		if ended() {
			return nil
		}
	}
}

// poll sends what changed since the last poll and reports whether it sent
// anything.
func (l *consoleLog) poll(w io.Writer) (bool, error) {
	if l.cur == nil {
		f, err := os.Open(l.path)
		if err != nil {
			return false, nil // not made yet
		}
		l.cur, l.pos, l.last = f, 0, nil
	}
	before := l.pos
	st, err := l.cur.Stat()
	if err != nil {
		return false, err
	}
	if now, err := os.Stat(l.path); err == nil && !os.SameFile(st, now) {
		// Moved away and made again (not how the agent rotates, but a
		// log that logrotate's create mode handled): finish the old file.
		if err := l.sendCur(w); err != nil {
			return true, err
		}
		l.cur.Close()
		if l.cur, err = os.Open(l.path); err != nil {
			l.cur = nil
			return true, nil
		}
		l.pos, l.last = 0, nil
		return true, l.sendCur(w)
	}
	if st.Size() < l.pos || st.Size() > l.pos && !holdsBytes(l.cur, l.pos, l.last) {
		if err := l.catchUp(w); err != nil {
			return true, err
		}
	}
	err = l.sendCur(w)
	return l.pos != before || err != nil, err
}

// holdsBytes reports whether f has want just before off.
func holdsBytes(f io.ReaderAt, off int64, want []byte) bool {
	if len(want) == 0 {
		return true
	}
	b := make([]byte, len(want))
	_, err := f.ReadAt(b, off-int64(len(b)))
	return err == nil && bytes.Equal(b, want)
}

// catchUp handles a rotation the follower missed: it sends the rest of the
// copy that holds the bytes last sent and every newer copy, then restarts
// at the log's start. Without such a copy (more rotations than copies
// kept passed between two polls) those bytes are gone.
func (l *consoleLog) catchUp(w io.Writer) error {
	from, last := l.pos, l.last
	l.pos, l.last = 0, nil
	var copies []*os.File
	defer func() {
		for _, f := range copies {
			f.Close()
		}
	}()
	for i := 1; i <= l.keep; i++ {
		f, err := os.Open(fmt.Sprintf("%s.%d", l.path, i))
		if err != nil {
			return nil
		}
		copies = append(copies, f)
		st, err := f.Stat()
		if err != nil || st.Size() < from {
			continue
		}
		if !holdsBytes(f, from, last) {
			continue
		}
		if _, err := io.Copy(w, io.NewSectionReader(f, from, st.Size()-from)); err != nil {
			return err
		}
		for j := len(copies) - 2; j >= 0; j-- {
			if _, err := copies[j].Seek(0, io.SeekStart); err != nil {
				return err
			}
			if _, err := io.Copy(w, copies[j]); err != nil {
				return err
			}
		}
		return nil
	}
	return nil
}
