package patch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Step output on disk.
//
// Every step's stdout and stderr, redacted, are kept on the core in
// <state dir>/patches/logs/<patchId>.<attempt>/step-<i>.<stream>.log for as
// long as the patch's journal record: the whole output, for when the streamed
// copy has gaps or the step result's tails are not enough. A retried step
// appends to the same files. A stream with captureOutput "full" is also
// streamed from its file, so none of it is dropped for coming too fast.

// stepLogDir is the folder of the step logs inside the journal's folder.
const stepLogDir = "logs"

// maxStepLogBytes bounds one stream's file; past it a line says the rest was
// not kept. (A variable for the tests.)
var maxStepLogBytes int64 = 64 << 20

// logDir is the folder of one patch attempt's step logs.
func (j *journal) logDir(patchID string, attempt int) string {
	return filepath.Join(j.dir, stepLogDir, patchID+"."+strconv.Itoa(attempt))
}

// stepLog is one stream of one step on disk. Its methods are safe for
// concurrent use.
type stepLog struct {
	mu     sync.Mutex
	f      *os.File
	size   int64
	capped bool
}

// openStepLog opens (appending) the file of step i's stream in dir.
func openStepLog(dir string, i int, stream string) (*stepLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("step log: %w", err)
	}
	path := filepath.Join(dir, "step-"+strconv.Itoa(i)+"."+stream+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("step log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("step log: %w", err)
	}
	return &stepLog{f: f, size: st.Size(), capped: st.Size() >= maxStepLogBytes}, nil
}

// cappedNote ends a file that reached maxStepLogBytes.
const cappedNote = "\n[ggagent: the output beyond this point was not kept on the device]\n"

// write appends p (what fits under maxStepLogBytes) and returns how many
// bytes the file grew by. A failed write stops the log: output is never
// held up by the disk.
func (l *stepLog) write(p []byte) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.capped || l.f == nil {
		return 0
	}
	if room := maxStepLogBytes - l.size; int64(len(p)) > room {
		p = append(p[:room:room], cappedNote...)
		l.capped = true
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	if err != nil {
		l.capped = true
	}
	return n
}

// readAt reads up to max bytes from offset off.
func (l *stepLog) readAt(off int64, max int) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil, errors.New("step log is closed")
	}
	n := min(int64(max), l.size-off)
	if n <= 0 {
		return nil, nil
	}
	buf := make([]byte, n)
	got, err := l.f.ReadAt(buf, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:got], err
}

// isCapped reports whether the file stopped growing.
func (l *stepLog) isCapped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.capped
}

// len is the file's size.
func (l *stepLog) len() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

func (l *stepLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
