package serialtransport

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"testing"
	"time"

	"go.bug.st/serial"
)

// scriptedPort is a serial.Port whose console output is a fixed script,
// served in chunks of a given size; writes are accepted and dropped.
type scriptedPort struct {
	serial.Port // nil: methods the transport does not use panic
	script      []byte
	chunk       int
}

func (p *scriptedPort) Read(b []byte) (int, error) {
	if len(p.script) == 0 {
		time.Sleep(time.Millisecond) // a quiet line: the read times out
		return 0, nil
	}
	n := min(len(b), p.chunk, len(p.script))
	copy(b, p.script[:n])
	p.script = p.script[n:]
	return n, nil
}

func (p *scriptedPort) Write(b []byte) (int, error) { return len(b), nil }
func (p *scriptedPort) Close() error                { return nil }

// fuzzTransport is a logged-in Transport on a scripted console.
func fuzzTransport(script []byte, chunk int) *Transport {
	return &Transport{
		cfg: Config{Path: "fuzz", LineEnding: "\r", LineMax: 1024, Login: Login{
			LoginPrompt: regexp.MustCompile(`login: ?$`), PasswordPrompt: regexp.MustCompile(`[Pp]assword: ?$`),
			ShellPrompt: regexp.MustCompile(`[#$>] ?$`)}},
		log: slog.New(slog.DiscardHandler), nonce: "f00d", loggedIn: true,
		port: &scriptedPort{script: script, chunk: chunk},
	}
}

// FuzzExecFraming drives the serial framing parser (the BEGIN/END markers
// around a command's output and its exit status) with hostile console
// output: line noise before the frame, any output bytes, any chunking. A
// well-formed frame always yields exactly the output (less the CR/NUL/BEL
// the console filter drops) and the exit status; an arbitrary stream never
// panics and ends by the deadline.
func FuzzExecFraming(f *testing.F) {
	f.Add([]byte("$ "), []byte("hello\nworld"), int16(0), uint8(7), []byte("garbage"))
	f.Add([]byte("\x1b[0m# "), []byte("__E_x:1\n__B_f00d"), int16(255), uint8(1), []byte("__B_f00d_1__\nout\n__E_f00d_1__:12\n"))
	f.Add([]byte{}, []byte("\r\n\x00\x07tab\t"), int16(-1), uint8(63), []byte("\x1b]0;title\x07login: "))
	f.Add([]byte("noise"), []byte(""), int16(127), uint8(200), []byte("__B_f00d_1__\n\n__E_f00d_1__:notanumber\n"))
	f.Fuzz(func(t *testing.T, noise, out []byte, rc int16, chunk uint8, raw []byte) {
		noise = bytes.ReplaceAll(noise, []byte{0x1b}, nil)
		out = bytes.ReplaceAll(out, []byte{0x1b}, nil)
		begin, end := []byte("__B_f00d_1__\n"), []byte("\n__E_f00d_1__:")
		want := (&ansiFilter{}).append(nil, out)
		if bytes.Contains((&ansiFilter{}).append(nil, noise), begin) || bytes.Contains(append(want, '\n'), end) {
			t.Skip("the noise or the output spells a marker")
		}
		var script bytes.Buffer
		script.Write(noise)
		script.Write(begin)
		script.Write(out)
		script.Write(end)
		script.WriteString(strconv.Itoa(int(rc)) + "\n__P_f00d__ ")
		tr := fuzzTransport(script.Bytes(), int(chunk%64)+1)
		var got bytes.Buffer
		code, err := tr.exec(context.Background(), "true", &got, 10*time.Second)
		if err != nil || code != int(rc) || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("frame around %q with status %d: got %q status %d (%v), want %q", out, rc, got.Bytes(), code, err, want)
		}

		// Arbitrary console output: an answer or an error, soon. (A prompt
		// ends it, so a frame the fuzzer finds does not wait for one.)
		tr = fuzzTransport(append(raw, "__P_f00d__ "...), int(chunk%64)+1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = tr.exec(context.Background(), "true", &bytes.Buffer{}, 50*time.Millisecond)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("exec on %q did not end", raw)
		}
	})
}
