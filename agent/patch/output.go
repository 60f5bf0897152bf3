package patch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// RedactionMarker replaces every credential value in logs, tails and events.
const RedactionMarker = "[REDACTED]"

// minSecret is the shortest value redacted: replacing every "a" of the
// output for a one-letter password would destroy the log and protect little.
const minSecret = 4

// redactor replaces known secret values. The zero value and nil redact
// nothing.
type redactor struct {
	secrets [][]byte
	longest int
}

// newRedactor builds a redactor for credential values. A multi-line value
// (a PEM key) is also redacted line by line, so a partial echo is caught.
func newRedactor(values ...[]byte) *redactor {
	r := &redactor{}
	add := func(b []byte) {
		b = bytes.TrimRight(b, "\r\n")
		if len(b) < minSecret {
			return
		}
		for _, s := range r.secrets {
			if bytes.Equal(s, b) {
				return
			}
		}
		r.secrets = append(r.secrets, bytes.Clone(b))
		r.longest = max(r.longest, len(b))
	}
	for _, v := range values {
		add(v)
		if bytes.Contains(v, []byte("\n")) {
			for _, line := range bytes.Split(v, []byte("\n")) {
				if line = bytes.TrimSpace(line); len(line) >= 16 {
					add(line)
				}
			}
		}
	}
	// Longest first, so a line of a key is not replaced inside the whole key
	// before the whole key is.
	slices.SortStableFunc(r.secrets, func(a, b []byte) int { return len(b) - len(a) })
	return r
}

func (r *redactor) bytes(b []byte) []byte {
	if r == nil {
		return b
	}
	for _, s := range r.secrets {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, []byte(RedactionMarker))
		}
	}
	return b
}

func (r *redactor) string(s string) string {
	if r == nil || len(r.secrets) == 0 {
		return s
	}
	return string(r.bytes([]byte(s)))
}

// redactWriter redacts a stream whose secrets may be split across writes:
// it holds back the last longest-1 bytes until more data (or Flush) shows
// whether they start a secret.
type redactWriter struct {
	red  *redactor
	out  func([]byte)
	hold []byte
}

func (w *redactWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.red == nil || w.red.longest == 0 {
		w.out(p)
		return n, nil
	}
	buf := w.red.bytes(append(w.hold, p...))
	keep := min(w.red.longest-1, len(buf))
	w.out(buf[:len(buf)-keep])
	w.hold = append(w.hold[:0:0], buf[len(buf)-keep:]...)
	return n, nil
}

// Flush emits what is held back (the stream has ended).
func (w *redactWriter) Flush() {
	if len(w.hold) > 0 {
		w.out(w.red.bytes(w.hold))
		w.hold = nil
	}
}

// tail keeps the last max bytes written.
type tail struct {
	max       int
	buf       []byte
	truncated bool
}

func (t *tail) write(p []byte) {
	if t.max <= 0 {
		return
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.truncated = true
	}
	// Keep the buffer bounded: copy down once it is twice the tail.
	if over := len(t.buf) - t.max; over > t.max {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
}

// text is the tail as valid UTF-8 (a cut may have split a character).
func (t *tail) text() string {
	b := t.buf
	if len(b) > t.max {
		b = b[len(b)-t.max:]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// logSender streams one patch attempt's output as LogChunks of at most
// patchmsg.MaxLogChunk bytes, at most rate chunks a second, through the
// best-effort publish path. Output beyond maxPending bytes per stream is
// dropped from the stream with a note saying how much, unless the step
// captures its output "full": then the rest is read back from the step's
// log file as the stream catches up, and none of it is dropped.
type logSender struct {
	pub     Publisher
	patchID string
	attempt int
	rate    int

	sendMu sync.Mutex // orders publishes and seq
	seq    int64

	mu      sync.Mutex
	pending []*pendingStream
	wake    chan struct{}
}

type pendingStream struct {
	step, stream string
	data         []byte
	dropped      int64
	// disk is the stream's step log (nil when there is none): every write
	// goes there first. With full, output that does not fit in data is
	// read back from it: diskOff is where the part not yet in data starts,
	// and spilled says there is such a part.
	disk    *stepLog
	full    bool
	diskOff int64
	spilled bool
}

const maxPending = 256 << 10

func newLogSender(pub Publisher, patchID string, attempt int, rate int, seq int64) *logSender {
	return &logSender{pub: pub, patchID: patchID, attempt: attempt, rate: rate, seq: seq, wake: make(chan struct{}, 1)}
}

// writer returns the sink for one step's stream. It writes to disk too
// (when not nil); full streams every byte (see logSender).
func (s *logSender) writer(step, stream string, disk *stepLog, full bool) func([]byte) {
	return func(p []byte) {
		if len(p) == 0 {
			return
		}
		s.mu.Lock()
		ps := s.find(step, stream)
		n := 0
		if disk != nil {
			n = disk.write(p) // under s.mu: the file and diskOff agree
		}
		// A file that stopped growing cannot hold what does not fit.
		ps.disk, ps.full = disk, full && disk != nil && !disk.isCapped()
		switch {
		case ps.spilled:
			// Read back from the file once the stream catches up.
		case len(ps.data)+len(p) <= maxPending:
			ps.data = append(ps.data, p...)
			ps.diskOff += int64(n)
		case ps.full:
			ps.spilled = true
		default:
			room := max(0, maxPending-len(ps.data))
			ps.dropped += int64(len(p) - room)
			ps.data = append(ps.data, p[:room]...)
			ps.diskOff += int64(n)
		}
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *logSender) find(step, stream string) *pendingStream {
	for _, ps := range s.pending {
		if ps.step == step && ps.stream == stream {
			return ps
		}
	}
	ps := &pendingStream{step: step, stream: stream}
	s.pending = append(s.pending, ps)
	return ps
}

// lastSeq is the last chunk sequence number used.
func (s *logSender) lastSeq() int64 {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.seq
}

// run sends pending output at the bounded rate until ctx ends.
func (s *logSender) run(ctx context.Context) {
	perTick := max(1, s.rate/10)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range perTick {
			if !s.sendOne(ctx, "", false) {
				break
			}
		}
	}
}

// sendOne publishes one chunk of pending output (of step, or of any step
// when step is ""); with final it also sends a stream's rest and EOF.
// It reports whether something was sent.
func (s *logSender) sendOne(ctx context.Context, step string, final bool) bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	var ps *pendingStream
	for _, p := range s.pending {
		if (step == "" || p.step == step) && (len(p.data) > 0 || p.dropped > 0 || p.spilled) {
			ps = p
			break
		}
	}
	if ps == nil {
		s.mu.Unlock()
		return false
	}
	if ps.spilled && len(ps.data) < patchmsg.MaxLogChunk {
		ps.refill()
	}
	data := ps.data
	if ps.dropped > 0 {
		note := fmt.Sprintf("\n[ggagent: %d bytes of output were not streamed (too fast); the step's tail has the end]\n", ps.dropped)
		data = append(append([]byte(nil), data...), note...)
		ps.dropped = 0
	}
	n := cutPoint(data, patchmsg.MaxLogChunk)
	chunk := string(data[:n])
	ps.data = append(ps.data[:0:0], data[n:]...)
	s.mu.Unlock()
	s.publish(ctx, ps.step, ps.stream, chunk, false)
	return true
}

// refill moves output that was kept on disk only into data, up to
// maxPending; s.mu must be held.
func (ps *pendingStream) refill() {
	b, err := ps.disk.readAt(ps.diskOff, maxPending-len(ps.data))
	ps.data = append(ps.data, b...)
	ps.diskOff += int64(len(b))
	if err != nil || ps.diskOff >= ps.disk.len() {
		// All caught up (or the file cannot be read: stream what arrives
		// from now on).
		ps.spilled = false
		ps.diskOff = ps.disk.len()
	}
}

// spilling reports whether a stream of step still has output on disk only.
func (s *logSender) spilling(step string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pending {
		if p.step == step && p.spilled {
			return true
		}
	}
	return false
}

// cutPoint is where to cut data so the chunk is at most limit bytes and,
// when possible, does not split a UTF-8 character.
func cutPoint(data []byte, limit int) int {
	if len(data) <= limit {
		return len(data)
	}
	n := limit
	for i := 0; i < utf8.UTFMax && n-i > 0; i++ {
		if utf8.RuneStart(data[n-i]) {
			return n - i
		}
	}
	return n
}

// endStep flushes a step's output and sends an EOF chunk for each of its
// streams. What is in memory (at most maxPending a stream) goes at once;
// what a "full" stream has on disk only goes at the stream's rate.
func (s *logSender) endStep(ctx context.Context, step string) {
	pace := time.Second / time.Duration(max(1, s.rate))
flush:
	for s.sendOne(ctx, step, true) {
		if s.spilling(step) {
			select {
			case <-ctx.Done():
				break flush
			case <-time.After(pace):
			}
		}
	}
	s.mu.Lock()
	var streams []string
	kept := s.pending[:0]
	for _, p := range s.pending {
		if p.step == step {
			streams = append(streams, p.stream)
		} else {
			kept = append(kept, p)
		}
	}
	s.pending = kept
	s.mu.Unlock()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for _, st := range streams {
		s.publish(ctx, step, st, "", true)
	}
}

// publish sends one chunk; sendMu must be held. A chunk that cannot be
// sent (offline) is lost: the broker tolerates gaps, tails are authoritative.
func (s *logSender) publish(ctx context.Context, step, stream, data string, eof bool) {
	s.seq++
	c := patchmsg.LogChunk{Version: patchmsg.Version, PatchID: s.patchID, Attempt: s.attempt,
		Step: step, Stream: stream, Seq: s.seq, Data: strings.ToValidUTF8(data, "\uFFFD"), EOF: eof}
	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	if ctx.Err() != nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = s.pub.PublishNow(pctx, patchmsg.LogsTopic(s.patchID), b, false)
}

// encodeEvent redacts an event's free text and tails and encodes it,
// shrinking the tails if the result would exceed patchmsg.MaxPayload.
func encodeEvent(ev patchmsg.Event, red *redactor) ([]byte, error) {
	ev.StatusMessage = red.string(ev.StatusMessage)
	ev.Reason = red.string(ev.Reason)
	if ev.Step != nil {
		st := *ev.Step
		st.StdoutTail = red.string(st.StdoutTail)
		st.StderrTail = red.string(st.StderrTail)
		st.Error = red.string(st.Error)
		ev.Step = &st
	}
	for {
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		if len(b) <= patchmsg.MaxPayload-1024 || ev.Step == nil || (ev.Step.StdoutTail == "" && ev.Step.StderrTail == "") {
			return b, nil
		}
		st := *ev.Step
		st.StdoutTail = shrink(st.StdoutTail)
		st.StderrTail = shrink(st.StderrTail)
		st.Truncated = true
		ev.Step = &st
	}
}

// shrink keeps the last half of s, on a character boundary.
func shrink(s string) string {
	if len(s) < 64 {
		return ""
	}
	s = s[len(s)/2:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return s
}
