// Package sshtransport is the patcher.Transport for client devices that run
// an SSH server (OpenSSH or dropbear). It needs nothing on the device but a
// POSIX shell; SFTP is used for uploads when the server offers it and `cat`
// over an exec channel otherwise.
package sshtransport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Config says how to reach and log in to a device.
type Config struct {
	// Addr is host:port.
	Addr string
	User string
	Auth Auth
	// HostKey decides which server keys are accepted; required.
	HostKey HostKeyPolicy
	// KeepAlive is the interval of keepalive@openssh.com probes; a failed
	// probe closes the connection so the command in flight ends with
	// patcher.ErrConnLost. Zero means 15s; negative disables.
	KeepAlive time.Duration
	// ConnectTimeout bounds TCP connect plus SSH handshake; zero means 15s.
	ConnectTimeout time.Duration
	// SudoPassword is given to `sudo -S` for Become; empty uses `sudo -n`
	// (passwordless sudoers entry). Ignored when User is root.
	SudoPassword string
	// KillGrace is how long a timed-out command gets between SIGTERM and
	// SIGKILL; zero means 2s.
	KillGrace time.Duration
	Logger    *slog.Logger
}

// Auth holds the credentials; every one that is set is offered, keys first.
type Auth struct {
	// PrivateKeyPEM is a PEM (OpenSSH, PKCS#1/#8) private key.
	PrivateKeyPEM []byte
	// Passphrase decrypts PrivateKeyPEM if it is encrypted.
	Passphrase []byte
	// Password is used for password auth and to answer keyboard-interactive
	// prompts that do not echo (what embedded servers ask for a password).
	Password string
	// KeyboardInteractive answers keyboard-interactive challenges itself
	// when set (instead of answering every hidden prompt with Password).
	KeyboardInteractive ssh.KeyboardInteractiveChallenge
}

// HostKeyPolicy checks the server's host key. Build one with Strict or TOFU.
type HostKeyPolicy struct {
	callback func(addr string) (ssh.HostKeyCallback, []string, error)
}

// Strict accepts only key (the pinned key of the target profile).
func Strict(key ssh.PublicKey) HostKeyPolicy {
	return HostKeyPolicy{callback: func(string) (ssh.HostKeyCallback, []string, error) {
		cb := func(_ string, _ net.Addr, got ssh.PublicKey) error {
			if bytes.Equal(got.Marshal(), key.Marshal()) {
				return nil
			}
			return mismatch(key, got, "the pinned key in the target profile")
		}
		return cb, algorithmsFor(key), nil
	}}
}

// TOFU trusts the first key a host presents and records it in the
// known_hosts file at path (created 0600, directory 0700); afterwards that
// key is required. A changed key is refused with both fingerprints.
func TOFU(path string) HostKeyPolicy {
	return HostKeyPolicy{callback: func(addr string) (ssh.HostKeyCallback, []string, error) {
		known, err := knownKeys(path, addr)
		if err != nil {
			return nil, nil, err
		}
		var algos []string
		for _, k := range known {
			algos = append(algos, algorithmsFor(k)...)
		}
		cb := func(_ string, _ net.Addr, got ssh.PublicKey) error {
			if len(known) == 0 {
				return appendKnownHost(path, addr, got)
			}
			for _, k := range known {
				if bytes.Equal(k.Marshal(), got.Marshal()) {
					return nil
				}
			}
			return mismatch(known[0], got, "the key recorded on first use in "+path)
		}
		return cb, algos, nil
	}}
}

// Insecure accepts any host key. It exists for tests and lab setups only
// (hostKeyPolicy "insecure"): it cannot tell the device from an impostor.
func Insecure() HostKeyPolicy {
	return HostKeyPolicy{callback: func(string) (ssh.HostKeyCallback, []string, error) {
		return ssh.InsecureIgnoreHostKey(), nil, nil
	}}
}

func mismatch(want, got ssh.PublicKey, where string) error {
	return fmt.Errorf("%w: server presented %s %s but %s is %s %s; if the device was really replaced, update its host key, otherwise someone may be intercepting the connection",
		patcher.ErrHostKeyMismatch, got.Type(), ssh.FingerprintSHA256(got), where, want.Type(), ssh.FingerprintSHA256(want))
}

// algorithmsFor pins negotiation to the key's type so the server cannot
// offer a different (unpinned) key type and fail spuriously.
func algorithmsFor(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{k.Type()}
}

func knownKeys(path, addr string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read known hosts: %w", err)
	}
	host := knownhosts.Normalize(addr)
	var keys []ssh.PublicKey
	for len(data) > 0 {
		_, hosts, key, _, rest, err := ssh.ParseKnownHosts(data)
		if err != nil {
			if err == io.EOF {
				break
			}
			return nil, fmt.Errorf("parse known hosts %s: %w", path, err)
		}
		data = rest
		for _, h := range hosts {
			if h == host {
				keys = append(keys, key)
			}
		}
	}
	return keys, nil
}

// appendKnownHost adds one line to path atomically (temp file + fsync +
// rename).
func appendKnownHost(path, addr string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record host key: %w", err)
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	data := append(old, knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)+"\n"...)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".known_hosts-*")
	if err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("record host key in %s: %w", path, err)
	}
	return nil
}

// Transport is a connected SSH session to one device.
type Transport struct {
	cfg    Config
	client *ssh.Client
	log    *slog.Logger
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	// hostKey is the key the server presented and the policy accepted.
	hostKey ssh.PublicKey
}

var _ patcher.Transport = (*Transport)(nil)

// Dial connects and authenticates. It starts the keepalive goroutine, which
// Close stops. Errors wrap patcher.ErrAuth, patcher.ErrHostKeyMismatch or
// patcher.ErrConnLost (unreachable).
func Dial(ctx context.Context, cfg Config) (*Transport, error) {
	if cfg.HostKey.callback == nil {
		return nil, errors.New("ssh: no host key policy: use sshtransport.Strict(key) or sshtransport.TOFU(path)")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 15 * time.Second
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hostCB, algos, err := cfg.HostKey.callback(cfg.Addr)
	if err != nil {
		return nil, err
	}
	var hostErr error
	var hostKey ssh.PublicKey
	cc := &ssh.ClientConfig{
		User: cfg.User,
		HostKeyCallback: func(h string, a net.Addr, k ssh.PublicKey) error {
			hostErr = hostCB(h, a, k)
			if hostErr == nil {
				hostKey = k
			}
			return hostErr
		},
		HostKeyAlgorithms: algos,
		Timeout:           cfg.ConnectTimeout,
	}
	if len(cfg.Auth.PrivateKeyPEM) > 0 {
		var signer ssh.Signer
		if len(cfg.Auth.Passphrase) > 0 {
			signer, err = ssh.ParsePrivateKeyWithPassphrase(cfg.Auth.PrivateKeyPEM, cfg.Auth.Passphrase)
		} else {
			signer, err = ssh.ParsePrivateKey(cfg.Auth.PrivateKeyPEM)
		}
		if err != nil {
			return nil, fmt.Errorf("ssh: parse private key: %w", err)
		}
		cc.Auth = append(cc.Auth, ssh.PublicKeys(signer))
	}
	if cfg.Auth.Password != "" {
		cc.Auth = append(cc.Auth, ssh.Password(cfg.Auth.Password))
	}
	if cfg.Auth.KeyboardInteractive != nil {
		cc.Auth = append(cc.Auth, ssh.KeyboardInteractive(cfg.Auth.KeyboardInteractive))
	} else if cfg.Auth.Password != "" {
		pw := cfg.Auth.Password
		cc.Auth = append(cc.Auth, ssh.KeyboardInteractive(func(_, _ string, qs []string, echos []bool) ([]string, error) {
			ans := make([]string, len(qs))
			for i := range qs {
				if !echos[i] {
					ans[i] = pw
				}
			}
			return ans, nil
		}))
	}

	d := net.Dialer{Timeout: cfg.ConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ssh: connect to %s: %w: %w", cfg.Addr, patcher.ErrConnLost, err)
	}
	deadline := time.Now().Add(cfg.ConnectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	// Ending ctx aborts a handshake the server never answers.
	stopAbort := context.AfterFunc(ctx, func() { conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, cfg.Addr, cc)
	aborted := !stopAbort()
	if err == nil && aborted {
		sc.Close()
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: handshake: %w", cfg.Addr, ctx.Err())
		case hostErr != nil:
			return nil, fmt.Errorf("ssh %s: %w", cfg.Addr, hostErr)
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("ssh %s@%s: %w: the server refused the configured key/password: %v", cfg.User, cfg.Addr, patcher.ErrAuth, err)
		default:
			return nil, fmt.Errorf("ssh %s: handshake: %w: %w", cfg.Addr, patcher.ErrConnLost, err)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	t := &Transport{cfg: cfg, client: ssh.NewClient(sc, chans, reqs), log: log, stop: make(chan struct{}), hostKey: hostKey}
	if cfg.KeepAlive > 0 {
		t.wg.Add(1)
		go t.keepAlive()
	}
	return t, nil
}

// HostKeyFingerprint is the SHA256 fingerprint (ssh-keygen -l style) of
// the host key the server presented, so a patch can report which key a
// tofu target was trusted with.
func (t *Transport) HostKeyFingerprint() string {
	if t.hostKey == nil {
		return ""
	}
	return ssh.FingerprintSHA256(t.hostKey)
}

func (t *Transport) keepAlive() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.KeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		res := make(chan error, 1)
		go func() {
			_, _, err := t.client.SendRequest("keepalive@openssh.com", true, nil)
			res <- err
		}()
		var err error
		select {
		case err = <-res:
		case <-time.After(2 * t.cfg.KeepAlive):
			err = errors.New("no answer")
		case <-t.stop:
			return
		}
		if err != nil {
			t.log.Warn("ssh keepalive failed; closing connection", "addr", t.cfg.Addr, "err", err)
			t.client.Close()
			return
		}
	}
}

// Close ends the connection and stops the keepalive.
func (t *Transport) Close() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		err = t.client.Close()
		t.wg.Wait()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// wrap builds the remote command: print the PID (sshd makes each non-pty
// session's command a session and process-group leader, so it is also the
// PGID to kill on timeout), then exec sh with the script as one argument.
func (t *Transport) wrap(script string, become bool) (cmd string, stdin string) {
	sh := "sh -c " + patcher.ShellQuote(script)
	switch {
	case !become || t.cfg.User == "root":
	case t.cfg.SudoPassword != "":
		sh = "sudo -S -p '' -- " + sh
		stdin = t.cfg.SudoPassword + "\n"
	default:
		sh = "sudo -n -- " + sh
	}
	return "echo $$; exec " + sh, stdin
}

// Run implements patcher.Transport. On timeout (or ctx end) the remote
// process group gets SIGTERM, then SIGKILL after KillGrace.
func (t *Transport) Run(ctx context.Context, cmd patcher.Command) (patcher.Result, error) {
	start := time.Now()
	prelude, err := patcher.ScriptPrelude(cmd)
	if err != nil {
		return patcher.Result{}, err
	}
	remote, stdin := t.wrap(prelude+cmd.Script, cmd.Become)
	s, err := t.client.NewSession()
	if err != nil {
		return patcher.Result{}, fmt.Errorf("ssh: open session: %w: %w", patcher.ErrConnLost, err)
	}
	defer s.Close()
	pgid := make(chan int, 1)
	s.Stdout = &pidLine{w: orDiscard(cmd.Stdout), pid: pgid}
	s.Stderr = orDiscard(cmd.Stderr)
	s.Stdin = strings.NewReader(stdin)
	if err := s.Start(remote); err != nil {
		return patcher.Result{}, fmt.Errorf("ssh: start command: %w: %w", patcher.ErrConnLost, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()

	var timeout <-chan time.Time
	if cmd.Timeout > 0 {
		tm := time.NewTimer(cmd.Timeout)
		defer tm.Stop()
		timeout = tm.C
	}
	var cause error
	select {
	case err := <-done:
		res := patcher.Result{Duration: time.Since(start)}
		var ee *ssh.ExitError
		switch {
		case err == nil:
			return res, nil
		case errors.As(err, &ee):
			if ee.Signal() != "" && ee.ExitStatus() == 0 {
				res.ExitCode = 128 + 9
			} else {
				res.ExitCode = ee.ExitStatus()
			}
			return res, nil
		default:
			return res, fmt.Errorf("ssh: command ended without an exit status: %w: %w", patcher.ErrConnLost, err)
		}
	case <-timeout:
		cause = fmt.Errorf("%w after %s", patcher.ErrTimeout, cmd.Timeout)
	case <-ctx.Done():
		cause = ctx.Err()
	}
	select {
	case pid := <-pgid:
		if err := t.kill(pid, cmd.Become); err != nil {
			t.log.Warn("ssh: could not kill timed-out command", "addr", t.cfg.Addr, "pgid", pid, "err", err)
		}
	default:
		t.log.Warn("ssh: timed-out command never reported its pid; cannot kill it", "addr", t.cfg.Addr)
	}
	s.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return patcher.Result{ExitCode: -1, Duration: time.Since(start)}, cause
}

// kill terminates process group pgid from a second session: closing a
// non-pty session does not kill the command and OpenSSH may ignore
// "signal" requests.
func (t *Transport) kill(pgid int, become bool) error {
	g := strconv.Itoa(pgid)
	// No "--": dash's kill builtin does not take it; "-PGID" after a signal
	// name means the process group in every shell.
	script := "kill -TERM -" + g + " 2>/dev/null || exit 0; i=0; while kill -0 -" + g +
		" 2>/dev/null; do i=$((i+1)); [ $i -gt 20 ] && break; sleep " + strconv.FormatFloat(t.cfg.KillGrace.Seconds()/20, 'f', 2, 64) +
		"; done; kill -KILL -" + g + " 2>/dev/null; true"
	s, err := t.client.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	remote, stdin := t.wrap(script, become)
	s.Stdin = strings.NewReader(stdin)
	return s.Run(remote)
}

// pidLine takes the first line of stdout (the wrapper's `echo $$`) off the
// stream and passes the rest through.
type pidLine struct {
	w    io.Writer
	pid  chan<- int
	head []byte
	done bool
}

func (p *pidLine) Write(b []byte) (int, error) {
	n := len(b)
	if !p.done {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.head = append(p.head, b...)
			return n, nil
		}
		p.head = append(p.head, b[:i]...)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(p.head))); err == nil {
			p.pid <- pid
		}
		p.done = true
		b = b[i+1:]
	}
	if len(b) == 0 {
		return n, nil
	}
	if _, err := p.w.Write(b); err != nil {
		return 0, err
	}
	return n, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// Upload implements patcher.Transport: write to a temporary name next to
// f.Path (SFTP, or `cat >` when the server has no sftp subsystem), chmod,
// compare `sha256sum` on the device, then rename into place.
func (t *Transport) Upload(ctx context.Context, f patcher.File) error {
	mode := f.Mode
	if mode == 0 {
		mode = 0o644
	}
	tmp := f.Path + ".ggpatch-part"
	h := sha256.New()
	src := io.TeeReader(f.Data, h)

	stopCtx := context.AfterFunc(ctx, func() { t.client.Close() })
	defer stopCtx()

	sc, err := sftp.NewClient(t.client)
	if err == nil {
		defer sc.Close()
		err = t.putSFTP(sc, tmp, src, mode)
	} else {
		t.log.Info("ssh: no sftp subsystem; uploading with cat", "addr", t.cfg.Addr, "err", err)
		err = t.putCat(tmp, src, mode)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", f.Path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if f.SHA256 != "" && !strings.EqualFold(f.SHA256, sum) {
		_ = t.quiet("rm -f " + patcher.ShellQuote(tmp))
		return fmt.Errorf("upload %s: %w: source data has sha256 %s, expected %s", f.Path, patcher.ErrChecksum, sum, f.SHA256)
	}
	var out bytes.Buffer
	script := "sha256sum " + patcher.ShellQuote(tmp)
	if _, err := t.Run(ctx, patcher.Command{Script: script, Stdout: &out, Timeout: 5 * time.Minute}); err != nil {
		return fmt.Errorf("upload %s: checksum on device: %w", f.Path, err)
	}
	got, _, _ := strings.Cut(strings.TrimSpace(out.String()), " ")
	if got != sum {
		_ = t.quiet("rm -f " + patcher.ShellQuote(tmp))
		return fmt.Errorf("upload %s: %w: device has sha256 %q, sent %s", f.Path, patcher.ErrChecksum, got, sum)
	}
	if sc != nil && err == nil {
		if err := sc.PosixRename(tmp, f.Path); err == nil {
			return nil
		}
	}
	var errOut bytes.Buffer
	res, err := t.Run(ctx, patcher.Command{Script: "mv -f " + patcher.ShellQuote(tmp) + " " + patcher.ShellQuote(f.Path), Stderr: &errOut, Timeout: time.Minute})
	if err != nil {
		return fmt.Errorf("upload %s: rename: %w", f.Path, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("upload %s: rename into place failed: %s", f.Path, strings.TrimSpace(errOut.String()))
	}
	return nil
}

func (t *Transport) putSFTP(sc *sftp.Client, tmp string, src io.Reader, mode os.FileMode) error {
	w, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("sftp create %s: %w", tmp, err)
	}
	if _, err := w.ReadFrom(bufio.NewReaderSize(src, 32<<10)); err != nil {
		w.Close()
		return fmt.Errorf("sftp write %s: %w", tmp, connLost(err))
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("sftp close %s: %w", tmp, connLost(err))
	}
	if err := sc.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("sftp chmod %s: %w", tmp, err)
	}
	return nil
}

func (t *Transport) putCat(tmp string, src io.Reader, mode os.FileMode) error {
	s, err := t.client.NewSession()
	if err != nil {
		return fmt.Errorf("open session: %w: %w", patcher.ErrConnLost, err)
	}
	defer s.Close()
	var stderr bytes.Buffer
	s.Stdin = src
	s.Stderr = &stderr
	q := patcher.ShellQuote(tmp)
	err = s.Run(fmt.Sprintf("umask 077; cat > %s && chmod %o %s", q, mode.Perm(), q))
	if err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("cat > %s: %s", tmp, strings.TrimSpace(stderr.String()))
		}
		return fmt.Errorf("cat > %s: %w: %w", tmp, patcher.ErrConnLost, err)
	}
	return nil
}

func (t *Transport) quiet(script string) error {
	_, err := t.Run(context.Background(), patcher.Command{Script: script, Timeout: 30 * time.Second})
	return err
}

func connLost(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w: %w", patcher.ErrConnLost, err)
	}
	return err
}
