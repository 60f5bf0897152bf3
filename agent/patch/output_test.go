package patch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestRedactWriterAcrossWrites(t *testing.T) {
	key := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n"
	red := newRedactor([]byte("s3cret-pw\n"), []byte(key), []byte("abc"))
	cases := []struct {
		name   string
		writes []string
		want   string
	}{
		{"whole", []string{"pw=s3cret-pw!"}, "pw=" + RedactionMarker + "!"},
		{"split", []string{"pw=s3c", "ret-", "pw done"}, "pw=" + RedactionMarker + " done"},
		{"byte by byte", strings.Split("xs3cret-pwy", ""), "x" + RedactionMarker + "y"},
		{"twice", []string{"s3cret-pws3cret-pw"}, RedactionMarker + RedactionMarker},
		{"prefix only", []string{"s3cret-p", "x"}, "s3cret-px"},
		{"short values are not secrets", []string{"abc"}, "abc"},
		{"a key line", []string{"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"}, RedactionMarker + "\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			w := &redactWriter{red: red, out: func(p []byte) { out.Write(p) }}
			for _, s := range c.writes {
				if _, err := w.Write([]byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			w.Flush()
			if out.String() != c.want {
				t.Errorf("got %q, want %q", out.String(), c.want)
			}
		})
	}
}

func TestTail(t *testing.T) {
	tl := &tail{max: 10}
	for range 100 {
		tl.write([]byte("0123456789abc"))
	}
	if tl.text() != "3456789abc" || !tl.truncated || len(tl.buf) > 30 {
		t.Errorf("tail %q truncated=%v buf=%d", tl.text(), tl.truncated, len(tl.buf))
	}
	small := &tail{max: 10}
	small.write([]byte("hi"))
	if small.text() != "hi" || small.truncated {
		t.Errorf("small tail %q %v", small.text(), small.truncated)
	}
}

func TestLogSenderChunksAndBound(t *testing.T) {
	pub := &recorder{}
	s := newLogSender(pub, "p", 1, 10, 0)
	w := s.writer("step", patchmsg.StreamStdout, nil, false)
	// Multi-byte characters straddle the 8 KiB boundaries.
	text := strings.Repeat("héllo wörld ", 3000)
	w([]byte(text))
	w(bytes.Repeat([]byte("x"), maxPending)) // overflows the pending bound
	s.endStep(context.Background(), "step")
	var got strings.Builder
	for i, c := range pub.logs {
		if len(c.Data) > patchmsg.MaxLogChunk {
			t.Errorf("chunk %d has %d bytes", i, len(c.Data))
		}
		if c.Seq != int64(i+1) {
			t.Errorf("chunk %d has seq %d", i, c.Seq)
		}
		got.WriteString(c.Data)
	}
	if !strings.HasPrefix(got.String(), text) {
		t.Errorf("streamed text differs from the output (valid UTF-8 cut?)")
	}
	if !strings.Contains(got.String(), "bytes of output were not streamed") {
		t.Errorf("no note about the dropped output")
	}
	if last := pub.logs[len(pub.logs)-1]; !last.EOF || last.Data != "" {
		t.Errorf("last chunk %+v, want an empty EOF", last)
	}

	// The rate bound: run sends at most rate/10 chunks per 100 ms tick.
	pub2 := &recorder{}
	s2 := newLogSender(pub2, "p", 1, 10, 100)
	s2.writer("step", patchmsg.StreamStderr, nil, false)(bytes.Repeat([]byte("y"), 20*patchmsg.MaxLogChunk))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s2.run(ctx); close(done) }()
	waitFor(t, "some chunks", func() bool {
		pub2.mu.Lock()
		defer pub2.mu.Unlock()
		return len(pub2.logs) >= 3
	})
	cancel()
	<-done
	pub2.mu.Lock()
	n := len(pub2.logs)
	first := pub2.logs[0].Seq
	pub2.mu.Unlock()
	if n >= 20 || first != 101 {
		t.Errorf("%d chunks sent by the rate-bounded loop (first seq %d); want it to still hold back the rest and start after 100", n, first)
	}
}

func TestStepLogCap(t *testing.T) {
	old := maxStepLogBytes
	maxStepLogBytes = 100
	t.Cleanup(func() { maxStepLogBytes = old })
	dir := t.TempDir()
	l, err := openStepLog(dir, 0, patchmsg.StreamStdout)
	if err != nil {
		t.Fatal(err)
	}
	pub := &recorder{}
	s := newLogSender(pub, "p", 1, 1000, 0)
	w := s.writer("step", patchmsg.StreamStdout, l, true)
	w(bytes.Repeat([]byte("a"), 60))
	w(bytes.Repeat([]byte("b"), 60)) // crosses the cap
	w(bytes.Repeat([]byte("c"), 10)) // past it
	s.endStep(context.Background(), "step")
	l.close()
	b, err := os.ReadFile(filepath.Join(dir, "step-0.stdout.log"))
	want := strings.Repeat("a", 60) + strings.Repeat("b", 40) + cappedNote
	if err != nil || string(b) != want {
		t.Fatalf("step log = %q, %v; want %q", b, err, want)
	}
	// The stream had room in memory: it has everything.
	var got strings.Builder
	for _, c := range pub.logs {
		got.WriteString(c.Data)
	}
	if got.String() != strings.Repeat("a", 60)+strings.Repeat("b", 60)+strings.Repeat("c", 10) {
		t.Errorf("streamed %q", got.String())
	}
	// Reopened, a capped file stays capped.
	l2, err := openStepLog(dir, 0, patchmsg.StreamStdout)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.close()
	if n := l2.write([]byte("more")); n != 0 || !l2.isCapped() {
		t.Errorf("reopened capped log took %d bytes", n)
	}
}
