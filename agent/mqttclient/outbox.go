package mqttclient

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// ErrOutboxFull is returned by Publish when the outbox is at its bound and
// holds nothing that may be dropped to make room (only health reports are
// ever dropped; deployment status and other reports are kept).
var ErrOutboxFull = errors.New("outbox is full of reports that must not be dropped")

// File names in the outbox directory. The class is part of the name so a
// restarted agent knows what it may drop without reading every file.
const (
	outboxHeader   = "ggfleet-outbox 1\n"
	extDroppable   = ".health.msg"
	extKeep        = ".keep.msg"
	outboxTempGlob = ".tmp-*"
)

// outboxEntry is what the outbox keeps in memory per message: never the
// payload, so memory stays small however long the broker is away.
type outboxEntry struct {
	seq       uint64
	droppable bool
	size      int64
}

func (e outboxEntry) name() string {
	ext := extKeep
	if e.droppable {
		ext = extDroppable
	}
	return fmt.Sprintf("%020d%s", e.seq, ext)
}

// outboxMsg is one message read back from disk.
type outboxMsg struct {
	entry   outboxEntry
	suffix  string
	payload []byte
}

// outbox is a directory of messages waiting for their PUBACK, one file per
// message, named by a monotonic sequence so that name order is send order.
type outbox struct {
	dir      string
	maxCount int
	maxBytes int64

	mu      sync.Mutex
	entries []outboxEntry // ascending seq
	bytes   int64
	nextSeq uint64
	dropped uint64
	notify  chan struct{} // buffered 1: "something was added"
}

// openOutbox opens (creating, mode 0700) dir and indexes the messages a
// previous run left there. Leftover temporary files are removed.
func openOutbox(dir string, maxCount int, maxBytes int64) (*outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create outbox directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("set outbox directory mode: %w", err)
	}
	o := &outbox{dir: dir, maxCount: maxCount, maxBytes: maxBytes, nextSeq: 1, notify: make(chan struct{}, 1)}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read outbox directory: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if ok, _ := filepath.Match(outboxTempGlob, name); ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("remove leftover outbox file: %w", err)
			}
			continue
		}
		e, ok := parseOutboxName(name)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("stat outbox file %s: %w", name, err)
		}
		e.size = info.Size()
		o.entries = append(o.entries, e)
		o.bytes += e.size
		o.nextSeq = max(o.nextSeq, e.seq+1)
	}
	slices.SortFunc(o.entries, func(a, b outboxEntry) int { return cmp.Compare(a.seq, b.seq) })
	return o, nil
}

func parseOutboxName(name string) (outboxEntry, bool) {
	var e outboxEntry
	var digits string
	switch {
	case strings.HasSuffix(name, extDroppable):
		digits, e.droppable = strings.TrimSuffix(name, extDroppable), true
	case strings.HasSuffix(name, extKeep):
		digits = strings.TrimSuffix(name, extKeep)
	default:
		return e, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || len(digits) != 20 {
		return e, false
	}
	e.seq = seq
	return e, true
}

// add persists a message (temp file, fsync, rename, fsync of the directory)
// and returns once it is on disk. When the outbox is at its bound it first
// drops the oldest health reports; if that is not enough it fails with
// ErrOutboxFull. It returns how many messages it dropped.
func (o *outbox) add(suffix string, payload []byte) (int, error) {
	var buf bytes.Buffer
	buf.Grow(len(outboxHeader) + len(suffix) + 1 + len(payload))
	buf.WriteString(outboxHeader)
	buf.WriteString(suffix)
	buf.WriteByte('\n')
	buf.Write(payload)
	size := int64(buf.Len())

	// The lock is held while writing so that file order is call order.
	o.mu.Lock()
	defer o.mu.Unlock()

	if size > o.maxBytes {
		return 0, fmt.Errorf("report of %d bytes is larger than the whole outbox (%d bytes)", size, o.maxBytes)
	}
	e := outboxEntry{seq: o.nextSeq, droppable: suffix == mqttmsg.Health, size: size}
	dropped := 0
	for len(o.entries)+1 > o.maxCount || o.bytes+size > o.maxBytes {
		i := slices.IndexFunc(o.entries, func(x outboxEntry) bool { return x.droppable })
		if i < 0 {
			return dropped, fmt.Errorf("keep %s report: %w (%d reports, %d bytes)", suffix, ErrOutboxFull, len(o.entries), o.bytes)
		}
		if err := o.removeLocked(o.entries[i]); err != nil {
			return dropped, err
		}
		o.dropped++
		dropped++
	}
	if err := writeFileAtomic(o.dir, e.name(), buf.Bytes()); err != nil {
		return dropped, fmt.Errorf("persist %s report: %w", suffix, err)
	}
	o.nextSeq++
	o.entries = append(o.entries, e)
	o.bytes += size
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return dropped, nil
}

// peek returns up to n of the oldest entries, in order.
func (o *outbox) peek(n int) []outboxEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.entries[:min(n, len(o.entries))])
}

// read loads one message. A message dropped since peek yields fs.ErrNotExist.
func (o *outbox) read(e outboxEntry) (outboxMsg, error) {
	b, err := os.ReadFile(filepath.Join(o.dir, e.name()))
	if err != nil {
		return outboxMsg{}, err
	}
	rest, ok := bytes.CutPrefix(b, []byte(outboxHeader))
	if !ok {
		return outboxMsg{}, fmt.Errorf("outbox file %s has an unknown header", e.name())
	}
	suffix, payload, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return outboxMsg{}, fmt.Errorf("outbox file %s is truncated", e.name())
	}
	return outboxMsg{entry: e, suffix: string(suffix), payload: payload}, nil
}

// remove deletes a message (delivered, or unreadable). Removing one that is
// already gone is not an error.
func (o *outbox) remove(e outboxEntry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.removeLocked(e)
}

// discard removes a message that can never be delivered and counts it as
// dropped.
func (o *outbox) discard(e outboxEntry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.removeLocked(e); err != nil {
		return err
	}
	o.dropped++
	return nil
}

func (o *outbox) removeLocked(e outboxEntry) error {
	i, found := slices.BinarySearchFunc(o.entries, e.seq, func(x outboxEntry, seq uint64) int {
		return cmp.Compare(x.seq, seq)
	})
	if !found {
		return nil
	}
	if err := os.Remove(filepath.Join(o.dir, e.name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove outbox file: %w", err)
	}
	o.bytes -= o.entries[i].size
	o.entries = slices.Delete(o.entries, i, i+1)
	return nil
}

// counts reports the number of waiting messages, their bytes on disk, and
// how many were dropped since open.
func (o *outbox) counts() (n int, size int64, dropped uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries), o.bytes, o.dropped
}

// writeFileAtomic writes dir/name so that a crash leaves either the whole
// file or none: temp file in the same directory, fsync, rename, fsync dir.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, outboxTempGlob)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
