// Package serialtransport is the patcher.Transport for client devices
// reached only through a serial console (a getty, login and a POSIX shell).
// It logs in with a small state machine, normalises the session, frames
// every command with unique BEGIN/END markers to recover output and exit
// code, never sends a line longer than LineMax (tty canonical mode drops
// input past 4095 bytes), uploads files as acknowledged base64 chunks with
// resume and a sha256 check, and recovers from timeouts with ^C.
package serialtransport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"go.bug.st/serial"
)

// Config says how to open the console and log in.
type Config struct {
	// Path is the serial device, preferably a stable /dev/serial/by-id/ path.
	Path string
	// Baud defaults to 115200 (8N1).
	Baud  int
	Login Login
	// LineEnding is what "Enter" sends; default "\r" as a terminal would.
	LineEnding string
	// LineMax caps every line sent, framing included; default 1024, at most
	// 4000.
	LineMax int
	// LoginTimeout bounds the login state machine; default 30s.
	LoginTimeout time.Duration
	Logger       *slog.Logger
}

// Login holds the console credentials and how to recognise prompts. The
// prompts are matched against the last (unfinished) line of output.
type Login struct {
	User, Password string
	// Defaults: `login: ?$`, `[Pp]assword: ?$`, `[#$>] ?$`.
	LoginPrompt, PasswordPrompt, ShellPrompt *regexp.Regexp
}

// Transport is a logged-in console session. Not safe for concurrent use.
type Transport struct {
	cfg      Config
	log      *slog.Logger
	port     serial.Port
	filter   ansiFilter
	buf      []byte // filtered output not yet consumed
	nonce    string
	seq      int
	loggedIn bool
	root     bool

	// afterChunk, when set (tests), is called after each acknowledged
	// upload chunk with the base64 offset reached.
	afterChunk func(off int)
	// firstChunk records the base64 offset the last upload started at.
	firstChunk int
	// chunkLine, when set (tests), may rewrite a chunk line before it is
	// sent, or drop it by returning "" (a line lost on the wire).
	chunkLine func(off int, line string) string
}

var _ patcher.Transport = (*Transport)(nil)

var (
	errAtLogin  = errors.New("console is at a login prompt, not a shell")
	errDeadline = errors.New("deadline")
	reIncorrect = regexp.MustCompile(`(?i)login incorrect|authentication fail|access denied`)
	// reOwnPrompt is the prompt normalise sets: a console still showing one
	// was left logged in by a transport that never closed (its agent died).
	reOwnPrompt = regexp.MustCompile(`__P_[0-9a-f]+__ ?$`)
)

// Open opens the port and logs in. Errors wrap patcher.ErrAuth (wrong
// credentials) or patcher.ErrConnLost (no port, no usable prompt).
func Open(ctx context.Context, cfg Config) (*Transport, error) {
	if cfg.Baud == 0 {
		cfg.Baud = 115200
	}
	if cfg.LineEnding == "" {
		cfg.LineEnding = "\r"
	}
	if cfg.LineMax == 0 {
		cfg.LineMax = 1024
	}
	if cfg.LineMax > 4000 || cfg.LineMax < 256 {
		return nil, fmt.Errorf("serial: LineMax %d out of range 256..4000", cfg.LineMax)
	}
	if cfg.LoginTimeout == 0 {
		cfg.LoginTimeout = 30 * time.Second
	}
	if cfg.Login.LoginPrompt == nil {
		cfg.Login.LoginPrompt = regexp.MustCompile(`login: ?$`)
	}
	if cfg.Login.PasswordPrompt == nil {
		cfg.Login.PasswordPrompt = regexp.MustCompile(`[Pp]assword: ?$`)
	}
	if cfg.Login.ShellPrompt == nil {
		cfg.Login.ShellPrompt = regexp.MustCompile(`[#$>] ?$`)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var nb [4]byte
	_, _ = rand.Read(nb[:])
	t := &Transport{cfg: cfg, log: log, nonce: hex.EncodeToString(nb[:])}
	if err := t.openPort(); err != nil {
		return nil, err
	}
	if err := t.login(ctx); err != nil {
		t.port.Close()
		return nil, err
	}
	return t, nil
}

func (t *Transport) openPort() error {
	p, err := serial.Open(t.cfg.Path, &serial.Mode{BaudRate: t.cfg.Baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return fmt.Errorf("serial: open %s: %w: %w", t.cfg.Path, patcher.ErrConnLost, err)
	}
	if err := p.SetReadTimeout(100 * time.Millisecond); err != nil {
		p.Close()
		return fmt.Errorf("serial: %s: set read timeout: %w", t.cfg.Path, err)
	}
	t.port = p
	t.buf = t.buf[:0]
	return nil
}

// Close logs out (best effort: it waits up to 3s for the login prompt, so
// the next user of the console finds it in a known state) and closes the
// port.
func (t *Transport) Close() error {
	if t.loggedIn {
		t.loggedIn = false
		if t.send("exit") == nil {
			t.buf = t.buf[:0]
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			for ctx.Err() == nil {
				k, err := t.settle(ctx, 3*time.Second)
				t.log.Debug("serial: close", "prompt", int(k), "err", err, "tail", t.tail())
				if err != nil || k == atLogin {
					break
				}
			}
			cancel()
		}
	}
	return t.port.Close()
}

// fill reads once (up to 100ms) and appends filtered output to buf. It
// reports whether anything arrived.
func (t *Transport) fill() (bool, error) {
	var b [4096]byte
	n, err := t.port.Read(b[:])
	if err != nil {
		t.loggedIn = false
		return false, fmt.Errorf("serial: read %s: %w: %w", t.cfg.Path, patcher.ErrConnLost, err)
	}
	if n == 0 {
		return false, nil
	}
	t.buf = t.filter.append(t.buf, b[:n])
	return true, nil
}

func (t *Transport) send(line string) error {
	if len(line)+len(t.cfg.LineEnding) > t.cfg.LineMax {
		return fmt.Errorf("serial: internal error: line of %d bytes exceeds LineMax %d", len(line), t.cfg.LineMax)
	}
	if _, err := t.port.Write([]byte(line + t.cfg.LineEnding)); err != nil {
		t.loggedIn = false
		return fmt.Errorf("serial: write %s: %w: %w", t.cfg.Path, patcher.ErrConnLost, err)
	}
	return nil
}

func (t *Transport) tail() string {
	i := bytes.LastIndexByte(t.buf, '\n')
	return string(t.buf[i+1:])
}

type promptKind int

const (
	unknown promptKind = iota
	atLogin
	atPassword
	atShell
)

func (t *Transport) classify() promptKind {
	tail := t.tail()
	switch {
	case t.cfg.Login.PasswordPrompt.MatchString(tail):
		return atPassword
	case t.cfg.Login.LoginPrompt.MatchString(tail):
		return atLogin
	case t.cfg.Login.ShellPrompt.MatchString(tail), reOwnPrompt.MatchString(tail):
		return atShell
	}
	return unknown
}

// settle reads until a prompt is recognised and the line has then been
// quiet for 200ms, or until wait passes; it returns what was recognised.
func (t *Transport) settle(ctx context.Context, wait time.Duration) (promptKind, error) {
	end := time.Now().Add(wait)
	quietSince := time.Now()
	for {
		got, err := t.fill()
		if err != nil {
			return unknown, err
		}
		if got {
			quietSince = time.Now()
		}
		k := t.classify()
		if k != unknown && time.Since(quietSince) >= 200*time.Millisecond {
			return k, nil
		}
		if time.Now().After(end) {
			return k, nil
		}
		if ctx.Err() != nil {
			return unknown, ctx.Err()
		}
	}
}

// login runs the state machine: drain, classify the prompt, act; repeat.
func (t *Transport) login(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.LoginTimeout)
	defer cancel()
	t.loggedIn = false
	sentUser, sentPass, unknowns := false, false, 0
	wait := 300 * time.Millisecond // first look: what is already there
	for range 15 {
		k, err := t.settle(ctx, wait)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("serial %s: %w: no shell prompt within %s", t.cfg.Path, patcher.ErrConnLost, t.cfg.LoginTimeout)
			}
			return err
		}
		t.log.Debug("serial: login step", "path", t.cfg.Path, "prompt", int(k), "tail", t.tail())
		if sentPass && reIncorrect.Match(t.buf) {
			return fmt.Errorf("serial %s: %w: console login as %q refused", t.cfg.Path, patcher.ErrAuth, t.cfg.Login.User)
		}
		wait = 5 * time.Second // after acting, give the device time to answer
		switch k {
		case atShell:
			if !sentUser {
				t.log.Info("serial: console was already at a shell prompt", "path", t.cfg.Path)
			}
			t.buf = t.buf[:0]
			return t.normalise(ctx)
		case atPassword:
			t.buf = t.buf[:0]
			if sentUser && !sentPass {
				err = t.send(t.cfg.Login.Password)
				sentPass = true
			} else {
				err = t.send("") // a dangling password prompt: abort it
				sentUser = false
			}
		case atLogin:
			if sentPass {
				return fmt.Errorf("serial %s: %w: console login as %q refused", t.cfg.Path, patcher.ErrAuth, t.cfg.Login.User)
			}
			t.buf = t.buf[:0]
			err = t.send(t.cfg.Login.User)
			sentUser = true
		default:
			t.buf = t.buf[:0]
			unknowns++
			if unknowns%2 == 0 {
				// An Enter got no prompt: a command may hold the console
				// (one a dead agent started). ^C it, as an operator would.
				if _, err = t.port.Write([]byte{0x03}); err != nil {
					err = fmt.Errorf("serial: write %s: %w: %w", t.cfg.Path, patcher.ErrConnLost, err)
				}
			} else {
				err = t.send("")
			}
			wait = time.Second
		}
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("serial %s: %w: no recognisable login or shell prompt", t.cfg.Path, patcher.ErrConnLost)
}

// normalise makes the session predictable: no echo, fixed prompt, C
// locale, no pager or bracketed paste; then learns whether it is root.
func (t *Transport) normalise(ctx context.Context) error {
	lines := []string{
		"stty -echo 2>/dev/null; unset HISTFILE TMOUT; export TERM=dumb PAGER=cat SYSTEMD_PAGER= LC_ALL=C",
		"bind 'set enable-bracketed-paste off' 2>/dev/null; PS2=''; PS1='__P_'\"" + t.nonce + "\"'__ '",
	}
	for _, l := range lines {
		if err := t.send(l); err != nil {
			return err
		}
	}
	t.loggedIn = true
	var out bytes.Buffer
	rc, err := t.exec(ctx, "id -u", &out, 10*time.Second)
	if err != nil {
		t.loggedIn = false
		return fmt.Errorf("serial %s: first command after login: %w", t.cfg.Path, err)
	}
	t.root = rc == 0 && strings.TrimSpace(out.String()) == "0"
	return nil
}

// ensure logs in again if the session was lost.
func (t *Transport) ensure(ctx context.Context) error {
	if t.loggedIn {
		return nil
	}
	t.log.Info("serial: logging in again", "path", t.cfg.Path)
	t.buf = t.buf[:0]
	return t.login(ctx)
}

// exec sends one framed command line and streams its output to w. It
// returns errAtLogin when the shell was gone before the command started
// (safe to log in and retry), patcher.ErrConnLost when it went away while
// the command ran, errDeadline when timeout passed.
func (t *Transport) exec(ctx context.Context, cmdline string, w io.Writer, timeout time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	t.seq++
	tag := fmt.Sprintf("%s_%d__", t.nonce, t.seq)
	// Split quoting: the echoed command line never contains a joined marker.
	line := "printf '%s%s\\n' '__B_' '" + tag + "'; " + cmdline + "; printf '\\n%s%s:%d\\n' '__E_' '" + tag + "' \"$?\""
	begin, end := []byte("__B_"+tag+"\n"), []byte("\n__E_"+tag+":")
	prompt := []byte("__P_" + t.nonce + "__ ")
	if err := t.send(line); err != nil {
		return -1, err
	}
	deadline := time.Now().Add(timeout)
	started := false
	quietSince := time.Now()
	for {
		if !started {
			if i := bytes.Index(t.buf, begin); i >= 0 {
				t.buf = t.buf[i+len(begin):]
				started = true
			}
		}
		if started {
			if i := bytes.Index(t.buf, end); i >= 0 {
				if j := bytes.IndexByte(t.buf[i+len(end):], '\n'); j >= 0 {
					if w != nil {
						_, _ = w.Write(t.buf[:i])
					}
					rc, err := strconv.Atoi(string(t.buf[i+len(end) : i+len(end)+j]))
					t.buf = t.buf[i+len(end)+j+1:]
					if err != nil {
						return -1, fmt.Errorf("serial: garbled exit status after command: %w", err)
					}
					t.eatPrompt(prompt)
					return rc, nil
				}
			} else if keep := len(end) + 16; len(t.buf) > keep {
				// Stream all but what could be the start of the END marker.
				if w != nil {
					_, _ = w.Write(t.buf[:len(t.buf)-keep])
				}
				t.buf = append(t.buf[:0], t.buf[len(t.buf)-keep:]...)
			}
		}
		if time.Since(quietSince) > 300*time.Millisecond {
			if k := t.classify(); k == atLogin || k == atPassword {
				t.loggedIn = false
				if !started {
					return -1, errAtLogin
				}
				return -1, fmt.Errorf("serial %s: %w: the shell exited and the console shows a login prompt", t.cfg.Path, patcher.ErrConnLost)
			}
		}
		if err := ctx.Err(); err != nil {
			return -1, err
		}
		if time.Now().After(deadline) {
			return -1, errDeadline
		}
		got, err := t.fill()
		if err != nil {
			return -1, err
		}
		if got {
			quietSince = time.Now()
		}
	}
}

// eatPrompt consumes the prompt that follows a command, if it comes soon.
func (t *Transport) eatPrompt(prompt []byte) {
	end := time.Now().Add(time.Second)
	for {
		if i := bytes.Index(t.buf, prompt); i >= 0 {
			t.buf = t.buf[i+len(prompt):]
			return
		}
		if time.Now().After(end) {
			return
		}
		if _, err := t.fill(); err != nil {
			return
		}
	}
}

// interrupt stops whatever runs in the foreground with ^C and re-syncs on
// a fresh marker; if the shell does not come back the session is marked
// lost so the next use logs in again.
func (t *Transport) interrupt(ctx context.Context) {
	for try := range 3 {
		if _, err := t.port.Write([]byte{0x03}); err != nil {
			t.loggedIn = false
			return
		}
		// ISIG flushes typed-ahead input: let the ^C land before typing.
		_, _ = t.settle(ctx, 300*time.Millisecond)
		t.buf = t.buf[:0]
		if _, err := t.exec(ctx, ":", nil, time.Duration(try+2)*time.Second); err == nil {
			return
		}
	}
	t.log.Warn("serial: shell did not come back after ^C; will log in again", "path", t.cfg.Path)
	t.loggedIn = false
	t.port.Close()
	if err := t.openPort(); err != nil {
		t.log.Warn("serial: reopen failed", "path", t.cfg.Path, "err", err)
	}
}

// run is exec with login-and-retry when the console turned out to be at a
// login prompt before the command started.
func (t *Transport) run(ctx context.Context, cmdline string, w io.Writer, timeout time.Duration) (int, error) {
	for attempt := 0; ; attempt++ {
		if err := t.ensure(ctx); err != nil {
			return -1, err
		}
		rc, err := t.exec(ctx, cmdline, w, timeout)
		if errors.Is(err, errAtLogin) && attempt == 0 {
			continue
		}
		if errors.Is(err, errAtLogin) {
			return -1, fmt.Errorf("serial %s: %w: shell keeps exiting", t.cfg.Path, patcher.ErrConnLost)
		}
		if errors.Is(err, errDeadline) {
			t.interrupt(ctx)
			return -1, fmt.Errorf("serial %s: %w after %s", t.cfg.Path, patcher.ErrTimeout, timeout)
		}
		return rc, err
	}
}

// Run implements patcher.Transport. The script, with Dir and Env applied,
// is uploaded to a temporary file and run as `sh FILE`, so no long line
// is ever typed. stderr is collected in a file and written to cmd.Stderr
// after the script ends. On timeout ^C is sent, which kills the script's
// foreground process group.
func (t *Transport) Run(ctx context.Context, cmd patcher.Command) (patcher.Result, error) {
	start := time.Now()
	prelude, err := patcher.ScriptPrelude(cmd)
	if err != nil {
		return patcher.Result{}, err
	}
	if err := t.ensure(ctx); err != nil {
		return patcher.Result{}, err
	}
	base := fmt.Sprintf("/tmp/.ggpatch-%s-%d", t.nonce, t.seq+1)
	q := patcher.ShellQuote
	if err := t.put(ctx, base+".sh", []byte(prelude+cmd.Script), 0o600, false); err != nil {
		return patcher.Result{}, fmt.Errorf("serial: send script: %w", err)
	}
	line := "sh " + q(base+".sh") + " </dev/null 2>" + q(base+".err")
	if cmd.Become && !t.root {
		line = "sudo -n " + line
	}
	timeout := cmd.Timeout
	if timeout == 0 {
		timeout = 24 * time.Hour
	}
	rc, err := t.run(ctx, line, cmd.Stdout, timeout)
	res := patcher.Result{ExitCode: rc, Duration: time.Since(start)}
	if err != nil {
		if errors.Is(err, patcher.ErrTimeout) {
			_, _ = t.run(ctx, "rm -f "+q(base+".sh")+" "+q(base+".err"), nil, 10*time.Second)
		}
		return res, err
	}
	if _, err := t.run(ctx, "cat "+q(base+".err")+" 2>/dev/null; rm -f "+q(base+".sh")+" "+q(base+".err"), cmd.Stderr, time.Minute); err != nil {
		return res, fmt.Errorf("serial: collect stderr: %w", err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// Upload implements patcher.Transport. The file travels as base64 chunks,
// each appended with printf and acknowledged by its END marker before the
// next (flow control without RTS/CTS). A partial transfer left by a lost
// connection is resumed. The result is decoded, checked with sha256sum,
// chmod-ed and renamed into place.
func (t *Transport) Upload(ctx context.Context, f patcher.File) error {
	data, err := io.ReadAll(f.Data)
	if err != nil {
		return fmt.Errorf("upload %s: read source: %w", f.Path, err)
	}
	sum := sha256.Sum256(data)
	if f.SHA256 != "" && !strings.EqualFold(f.SHA256, hex.EncodeToString(sum[:])) {
		return fmt.Errorf("upload %s: %w: source data has sha256 %x, expected %s", f.Path, patcher.ErrChecksum, sum, f.SHA256)
	}
	mode := f.Mode
	if mode == 0 {
		mode = 0o644
	}
	if err := t.ensure(ctx); err != nil {
		return err
	}
	return t.put(ctx, f.Path, data, mode, true)
}

func (t *Transport) put(ctx context.Context, path string, data []byte, mode os.FileMode, verify bool) error {
	q := patcher.ShellQuote
	sum := sha256.Sum256(data)
	hexsum := hex.EncodeToString(sum[:])
	b64 := base64.StdEncoding.EncodeToString(data)
	part := path + ".ggp-" + hexsum[:12] + ".b64"
	tmp := path + ".ggp-part"

	// Stream the base64 text, resuming from what already arrived; a lost
	// shell, a dropped line or a stuck command costs a resync, not the
	// upload. Give up after a few resyncs that made no progress.
	first, best, stalls := true, -1, 0
	for {
		off, err := t.resumeOffset(ctx, part, len(b64))
		if err != nil {
			return fmt.Errorf("upload %s: %w", path, err)
		}
		if first {
			if off > 0 {
				t.log.Info("serial: resuming upload", "path", path, "base64Offset", off, "base64Total", len(b64))
			}
			t.firstChunk, first = off, false
		}
		if off > best {
			best, stalls = off, 0
		} else if stalls++; stalls > 3 {
			return fmt.Errorf("upload %s: %w: no progress after %d resyncs at base64 offset %d", path, patcher.ErrConnLost, stalls-1, off)
		}
		err = t.stream(ctx, part, b64, off)
		if err == nil {
			break
		}
		if !errors.Is(err, errResync) {
			return fmt.Errorf("upload %s: %w", path, err)
		}
		t.log.Info("serial: upload resyncing", "path", path, "reason", err)
	}
	var out bytes.Buffer
	check := "base64 -d " + q(part) + " > " + q(tmp) + " && chmod " + strconv.FormatUint(uint64(mode.Perm()), 8) + " " + q(tmp)
	if verify {
		check += " && sha256sum " + q(tmp)
	}
	rc, err := t.run(ctx, check, &out, 5*time.Minute)
	if err != nil {
		return fmt.Errorf("upload %s: decode: %w", path, err)
	}
	if verify {
		got, _, _ := strings.Cut(strings.TrimSpace(out.String()), " ")
		if rc != 0 || got != hexsum {
			_, _ = t.run(ctx, "rm -f "+q(part)+" "+q(tmp), nil, 30*time.Second)
			return fmt.Errorf("upload %s: %w: device has %q (exit %d), sent %s", path, patcher.ErrChecksum, got, rc, hexsum)
		}
	} else if rc != 0 {
		return fmt.Errorf("upload %s: decode failed (exit %d): %s", path, rc, strings.TrimSpace(out.String()))
	}
	rc, err = t.run(ctx, "mv -f "+q(tmp)+" "+q(path)+" && rm -f "+q(part), nil, 30*time.Second)
	if err != nil {
		return fmt.Errorf("upload %s: rename: %w", path, err)
	}
	if rc != 0 {
		return fmt.Errorf("upload %s: rename into place failed (exit %d)", path, rc)
	}
	return nil
}

// resumeOffset tells how many base64 bytes of this exact content (part
// is named after its sha256) already arrived, starting over when the
// partial file is unusable.
func (t *Transport) resumeOffset(ctx context.Context, part string, total int) (int, error) {
	q := patcher.ShellQuote
	var out bytes.Buffer
	if _, err := t.run(ctx, "if [ -f "+q(part)+" ]; then wc -c < "+q(part)+"; else echo 0; fi", &out, 30*time.Second); err != nil {
		return 0, err
	}
	off, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil || off%4 != 0 || off > total {
		if _, err := t.run(ctx, "rm -f "+q(part), nil, 30*time.Second); err != nil {
			return 0, err
		}
		return 0, nil
	}
	return off, nil
}

// streamWindow bounds the bytes of chunk lines sent but not yet
// acknowledged. It stays below the 4095 bytes a tty in canonical mode
// buffers, so lines queued while the shell is busy are never dropped,
// and above two lines, so the line never idles waiting for an ack.
const streamWindow = 3072

// errResync asks put to re-read the offset the device has and stream on
// from there.
var errResync = errors.New("resync needed")

// stream appends b64[off:] to part. A shell function defined first checks
// each chunk's offset against what it has appended (so a lost or garbled
// line can never be appended out of place), appends it and answers with
// the new offset. Chunk lines are pipelined up to streamWindow bytes ahead
// of the acknowledgements: a stop-and-wait ack per line would leave the
// line idle for a round trip each time. Returns errResync (wrapped) when
// the device must be asked where it stands: a shell that went away, a
// stuck line, an unexpected offset.
func (t *Transport) stream(ctx context.Context, part, b64 string, off int) error {
	q := patcher.ShellQuote
	ack := "_" + t.nonce // split quoting: no echoed line contains the joined marker
	def := "_ggp=" + q(part) + "; : >> \"$_ggp\""
	if len(def) > t.cfg.LineMax-200 {
		return fmt.Errorf("path %s too long for LineMax %d", part, t.cfg.LineMax)
	}
	if rc, err := t.run(ctx, def, nil, 30*time.Second); err != nil || rc != 0 {
		if err == nil {
			err = fmt.Errorf("creating %s failed (exit %d): is the directory writable?", part, rc)
		}
		return err
	}
	fn := "_ggo=" + strconv.Itoa(off) + "; _gga() { if [ $# != 2 ] || [ \"$1\" != \"$_ggo\" ]; then printf '__N%s:%s\\n' " + ack + " \"$_ggo\"; " +
		"elif printf %s \"$2\" >> \"$_ggp\"; then _ggo=$((_ggo+${#2})); printf '__A%s:%s\\n' " + ack + " \"$_ggo\"; " +
		"else printf '__F%s:%s\\n' " + ack + " \"$_ggo\"; fi; }"
	if _, err := t.run(ctx, fn, nil, 30*time.Second); err != nil {
		return err
	}
	chunk := (t.cfg.LineMax - len(t.cfg.LineEnding) - len("_gga  ''") - len(strconv.Itoa(len(b64)))) &^ 3
	reAck := regexp.MustCompile(`__([ANF])_` + t.nonce + `:([0-9]+)\n`)
	type line struct{ end, size int }
	var pending []line
	inflight := 0
	sent := off
	progress := time.Now()
	quietSince := time.Now()
	for off < len(b64) {
		for {
			m := reAck.FindSubmatchIndex(t.buf)
			if m == nil {
				break
			}
			kind, at := t.buf[m[2]], string(t.buf[m[4]:m[5]])
			t.buf = t.buf[m[1]:]
			if len(pending) == 0 {
				continue // an answer to a line of an earlier stream
			}
			want := pending[0].end
			inflight -= pending[0].size
			pending = pending[1:]
			switch {
			case kind == 'F':
				return fmt.Errorf("appending to %s failed at base64 offset %s: is the disk full?", part, at)
			case kind == 'A' && at == strconv.Itoa(want):
				off = want
				progress = time.Now()
				if t.afterChunk != nil {
					t.afterChunk(off)
				}
			default:
				return fmt.Errorf("%w: device is at base64 offset %s, expected %d", errResync, at, want)
			}
			if len(pending) == 0 {
				break
			}
		}
		if off >= len(b64) {
			break
		}
		for sent < len(b64) {
			n := min(chunk, len(b64)-sent)
			l := "_gga " + strconv.Itoa(sent) + " '" + b64[sent:sent+n] + "'"
			size := len(l) + len(t.cfg.LineEnding)
			if len(pending) > 0 && inflight+size > streamWindow {
				break
			}
			if t.chunkLine != nil {
				l = t.chunkLine(sent, l)
			}
			if l != "" {
				if err := t.send(l); err != nil {
					return fmt.Errorf("%w: %w", errResync, err)
				}
			}
			pending = append(pending, line{sent + n, size})
			inflight += size
			sent += n
		}
		if time.Since(quietSince) > 300*time.Millisecond {
			if k := t.classify(); k == atLogin || k == atPassword {
				t.loggedIn = false
				return fmt.Errorf("%w: the shell exited and the console shows a login prompt", errResync)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(progress) > 30*time.Second {
			t.interrupt(ctx)
			return fmt.Errorf("%w: no acknowledgement for 30s", errResync)
		}
		got, err := t.fill()
		if err != nil {
			return fmt.Errorf("%w: %w", errResync, err)
		}
		if got {
			quietSince = time.Now()
		}
	}
	return nil
}

// ansiFilter drops CR, NUL and terminal escape sequences from console
// output, keeping state across reads.
type ansiFilter struct {
	state int // 0 text, 1 after ESC, 2 CSI, 3 OSC
}

func (f *ansiFilter) append(dst, src []byte) []byte {
	for _, c := range src {
		switch f.state {
		case 0:
			switch c {
			case 0x1b:
				f.state = 1
			case '\r', 0, 0x07:
			default:
				dst = append(dst, c)
			}
		case 1:
			switch c {
			case '[':
				f.state = 2
			case ']':
				f.state = 3
			default:
				f.state = 0
			}
		case 2:
			if c >= 0x40 && c <= 0x7e {
				f.state = 0
			}
		case 3:
			if c == 0x07 || c == '\\' {
				f.state = 0
			}
		}
	}
	return dst
}
