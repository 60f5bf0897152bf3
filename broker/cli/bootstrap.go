package cli

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/patcher/sshtransport"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// bootstrapOptions are the flags of `cores bootstrap`.
type bootstrapOptions struct {
	target       string // user@host[:port]
	core         string
	identity     string
	passwordEnv  string
	hostKey      string // authorized_keys form, for strict
	policy       string // strict | tofu
	knownHosts   string
	agentDist    string
	remotePath   string
	deviceBroker string
	installArgs  []string
	expires      time.Duration
	timeout      time.Duration
}

// remoteArch maps `uname -m` to the arch of the ggagent builds.
func remoteArch(uname string) (string, error) {
	switch m := strings.TrimSpace(uname); {
	case m == "x86_64" || m == "amd64":
		return "amd64", nil
	case m == "aarch64" || m == "arm64":
		return "arm64", nil
	case strings.HasPrefix(m, "armv7") || m == "armv8l" || m == "armhf": // armv8l: a 32-bit userland on a 64-bit CPU
		return "armv7", nil
	default:
		return "", fmt.Errorf("the device's architecture %q has no ggagent build (there are amd64, arm64 and armv7)", m)
	}
}

// parseSSHTarget splits user@host[:port]; the port defaults to 22.
func parseSSHTarget(s string) (user, addr string, err error) {
	user, host, ok := strings.Cut(s, "@")
	if !ok || user == "" || host == "" {
		return "", "", fmt.Errorf("--ssh %q: use user@host or user@host:port", s)
	}
	if h, p, err := net.SplitHostPort(host); err == nil {
		if h == "" || p == "" {
			return "", "", fmt.Errorf("--ssh %q: use user@host or user@host:port", s)
		}
		return user, host, nil
	}
	return user, net.JoinHostPort(strings.Trim(host, "[]"), "22"), nil
}

// knownHostKeys returns the keys path records for addr (none when the
// file does not exist).
func knownHostKeys(path, addr string) ([]ssh.PublicKey, error) {
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
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
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

func bootstrapCommand() subcommand {
	return subcommand{name: "cores bootstrap", args: "--ssh user@host[:port] --core NAME [--identity KEY] [--host-key-policy strict|tofu]",
		summary: "Install ggagent on a fresh device over SSH: copy the right build, enroll it with a fresh one-time token, start it",
		setup: func(fs *pflag.FlagSet) runFunc {
			var o bootstrapOptions
			fs.StringVar(&o.target, "ssh", "", "the device: user@host or user@host:port (required)")
			fs.StringVar(&o.core, "core", "", "core name; the core must exist (ggfleet cores create) (required)")
			fs.StringVar(&o.identity, "identity", "", "SSH private key file (default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa)")
			fs.StringVar(&o.passwordEnv, "password-env", "", "name of an environment variable holding the SSH (and sudo) password")
			fs.StringVar(&o.policy, "host-key-policy", "tofu", "strict: the host key must be --host-key or in --known-hosts; tofu: trust and record the first key seen, then require it")
			fs.StringVar(&o.hostKey, "host-key", "", "with strict: the device's public host key (\"ssh-ed25519 AAAA...\")")
			fs.StringVar(&o.knownHosts, "known-hosts", "", "known_hosts file (default ~/.ssh/known_hosts)")
			fs.StringVar(&o.agentDist, "agent-dist", "", "directory with ggagent_linux_<arch> builds (default: download from the broker's /downloads)")
			fs.StringVar(&o.remotePath, "remote-path", "/usr/local/bin/ggagent", "where ggagent goes on the device")
			fs.StringVar(&o.deviceBroker, "device-broker-url", "", "broker URL as the device reaches it (default: --broker-url)")
			fs.StringArrayVar(&o.installArgs, "install-arg", nil, "extra argument for `ggagent install` on the device (repeatable), e.g. --install-arg=--runtime=simulated")
			fs.DurationVar(&o.expires, "expires", time.Hour, "lifetime of the enrollment token")
			fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "how long `ggagent install` may run on the device")
			return func(c *cmdCtx, args []string) error {
				if err := needArgs(args, 0, "no arguments"); err != nil {
					return err
				}
				return bootstrap(c, o)
			}
		}}
}

// bootstrapStep prints one numbered step of a bootstrap.
type bootstrapSteps struct {
	w     io.Writer
	n, of int
}

func (s *bootstrapSteps) next(format string, a ...any) {
	s.n++
	fmt.Fprintf(s.w, "[%d/%d] %s\n", s.n, s.of, fmt.Sprintf(format, a...))
}

func bootstrap(c *cmdCtx, o bootstrapOptions) error {
	if o.target == "" || o.core == "" {
		return usagef("--ssh user@host and --core NAME are required")
	}
	user, addr, err := parseSSHTarget(o.target)
	if err != nil {
		return usagef("%v", err)
	}
	if o.policy != "strict" && o.policy != "tofu" {
		return usagef("--host-key-policy %q: use strict or tofu", o.policy)
	}
	home, _ := os.UserHomeDir()
	if o.knownHosts == "" {
		o.knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	auth, err := sshAuth(o, home)
	if err != nil {
		return err
	}
	deviceBroker := o.deviceBroker
	if deviceBroker == "" {
		deviceBroker = c.api.BaseURL()
	}
	out := c.stdout
	if c.output != "table" {
		out = c.stderr // keep stdout for the result document
	}
	steps := &bootstrapSteps{w: out, of: 6}

	// The core must exist before anything touches the device.
	var core cdf.Core
	if err := c.api.Do(c.ctx, http.MethodGet, "/cores/"+url.PathEscape(o.core), nil, &core); err != nil {
		return fmt.Errorf("core %q: %w (create it first: ggfleet cores create --template PT %s)", o.core, err, o.core)
	}

	// 1. SSH, with the host key checked.
	policy, note, err := hostKeyPolicy(o, addr)
	if err != nil {
		return err
	}
	steps.next("connect to %s@%s (%s)", user, addr, note)
	tr, err := sshtransport.Dial(c.ctx, sshtransport.Config{Addr: addr, User: user, Auth: auth, HostKey: policy, SudoPassword: auth.Password})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", o.target, err)
	}
	defer tr.Close()
	fmt.Fprintf(out, "      host key %s\n", tr.HostKeyFingerprint())

	// 2. Architecture.
	var uname strings.Builder
	if res, err := tr.Run(c.ctx, patcher.Command{Script: "uname -m", Stdout: &uname, Timeout: time.Minute}); err != nil || res.ExitCode != 0 {
		return fmt.Errorf("detect the device's architecture (uname -m): exit %d: %v", res.ExitCode, err)
	}
	arch, err := remoteArch(uname.String())
	if err != nil {
		return err
	}
	steps.next("device architecture: %s (linux/%s)", strings.TrimSpace(uname.String()), arch)

	// 3. The build, with its checksum.
	build, sum, size, cleanup, err := agentBuild(c, o.agentDist, arch)
	if err != nil {
		return err
	}
	defer cleanup()
	steps.next("ggagent build for linux/%s: %d bytes, sha256 %s", arch, size, sum)

	// 4. Upload (the transport verifies the checksum on the device), then
	// move into place as root.
	f, err := os.Open(build)
	if err != nil {
		return fmt.Errorf("open the ggagent build: %w", err)
	}
	defer f.Close()
	tmp := fmt.Sprintf("/tmp/ggagent-bootstrap-%s", randomSuffix())
	if err := tr.Upload(c.ctx, patcher.File{Path: tmp, Mode: 0o755, Data: f, Size: size, SHA256: sum}); err != nil {
		return fmt.Errorf("upload ggagent: %w", err)
	}
	dest := o.remotePath
	place := fmt.Sprintf("mkdir -p %s && install -m 0755 %s %s; rc=$?; rm -f %s; exit $rc",
		patcher.ShellQuote(filepath.Dir(dest)), patcher.ShellQuote(tmp), patcher.ShellQuote(dest), patcher.ShellQuote(tmp))
	var placeErr strings.Builder
	if res, err := tr.Run(c.ctx, patcher.Command{Script: place, Become: true, Stderr: &placeErr, Timeout: 5 * time.Minute}); err != nil || res.ExitCode != 0 {
		return fmt.Errorf("install ggagent at %s: exit %d: %v %s", dest, res.ExitCode, err, strings.TrimSpace(placeErr.String()))
	}
	steps.next("copied to %s:%s (checksum verified on the device)", addr, dest)

	// 5. A fresh one-time token.
	var tok struct {
		Token     string   `json:"token"`
		ExpiresAt cdf.Time `json:"expiresAt"`
	}
	body := map[string]any{"expiresInSeconds": int64(o.expires.Round(time.Second) / time.Second)}
	if err := c.api.Do(c.ctx, http.MethodPost, "/cores/"+url.PathEscape(o.core)+"/enrollmentTokens", body, &tok); err != nil {
		return fmt.Errorf("create enrollment token for core %q: %w", o.core, err)
	}
	steps.next("one-time enrollment token for core %s (valid until %s)", o.core, ts(tok.ExpiresAt))

	// 6. ggagent install, its output streamed; the token travels in the
	// environment so it never shows in the device's process list.
	install := []string{patcher.ShellQuote(dest), "install", "--broker", patcher.ShellQuote(deviceBroker), "--core", patcher.ShellQuote(o.core)}
	if c.cfg.CASHA256 != "" {
		install = append(install, "--ca-sha256", patcher.ShellQuote(c.cfg.CASHA256))
	}
	for _, a := range o.installArgs {
		install = append(install, patcher.ShellQuote(a))
	}
	steps.next("run on the device: %s", strings.Join(install, " "))
	stdout, stderr := prefixWriter(out, "      | "), prefixWriter(out, "      | ")
	res, err := tr.Run(c.ctx, patcher.Command{Script: strings.Join(install, " "), Env: map[string]string{"GGAGENT_TOKEN": tok.Token},
		Become: true, Stdout: stdout, Stderr: stderr, Timeout: o.timeout})
	stdout.flush()
	stderr.flush()
	if c.ctx.Err() != nil {
		return &interruptedError{msg: "interrupted: ggagent install on the device was stopped; run the same command again to resume it"}
	}
	if err != nil {
		return fmt.Errorf("ggagent install on %s: %w", o.target, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("ggagent install on %s exited %d (its output is above); fix the cause and run the same command again: the install resumes", o.target, res.ExitCode)
	}

	if err := c.api.Do(c.ctx, http.MethodGet, "/cores/"+url.PathEscape(o.core), nil, &core); err != nil {
		return fmt.Errorf("read core %q: %w", o.core, err)
	}
	result := map[string]any{"coreName": o.core, "host": addr, "arch": arch, "remotePath": dest,
		"hostKeyFingerprint": tr.HostKeyFingerprint(), "sha256": sum}
	if core.Device != nil {
		result["status"], result["connectivity"] = core.Device.Status, core.Device.Connectivity
	}
	return emit(c, result, func(w io.Writer) {
		st, conn := "UNKNOWN", "OFFLINE"
		if core.Device != nil {
			st, conn = core.Device.Status, core.Device.Connectivity
		}
		fmt.Fprintf(w, "core %s bootstrapped on %s: device status %s, %s\n", o.core, addr, st, conn)
	})
}

// sshAuth loads the private key (explicit, or the default ones that
// exist) and the password from the named environment variable.
func sshAuth(o bootstrapOptions, home string) (sshtransport.Auth, error) {
	var a sshtransport.Auth
	if o.passwordEnv != "" {
		a.Password = os.Getenv(o.passwordEnv)
		if a.Password == "" {
			return a, usagef("--password-env %s: the variable is empty or not set", o.passwordEnv)
		}
	}
	if o.identity != "" {
		b, err := os.ReadFile(o.identity)
		if err != nil {
			return a, usagef("--identity: %v", err)
		}
		a.PrivateKeyPEM = b
		return a, nil
	}
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		if b, err := os.ReadFile(filepath.Join(home, ".ssh", name)); err == nil {
			a.PrivateKeyPEM = b
			return a, nil
		}
	}
	if a.Password == "" {
		return a, usagef("no SSH credentials: pass --identity KEY or --password-env VAR")
	}
	return a, nil
}

// hostKeyPolicy builds the policy and says in words what it checks.
func hostKeyPolicy(o bootstrapOptions, addr string) (sshtransport.HostKeyPolicy, string, error) {
	if o.policy == "tofu" {
		if o.hostKey != "" {
			return sshtransport.HostKeyPolicy{}, "", usagef("--host-key goes with --host-key-policy strict")
		}
		known, err := knownHostKeys(o.knownHosts, addr)
		if err != nil {
			return sshtransport.HostKeyPolicy{}, "", err
		}
		if len(known) == 0 {
			return sshtransport.TOFU(o.knownHosts), "first use: trusting the host key it presents and recording it in " + o.knownHosts, nil
		}
		return sshtransport.TOFU(o.knownHosts), "host key must match " + o.knownHosts, nil
	}
	if o.hostKey != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(o.hostKey))
		if err != nil {
			return sshtransport.HostKeyPolicy{}, "", usagef("--host-key: %v (use the form \"ssh-ed25519 AAAA...\")", err)
		}
		return sshtransport.Strict(k), "host key pinned to " + ssh.FingerprintSHA256(k), nil
	}
	known, err := knownHostKeys(o.knownHosts, addr)
	if err != nil {
		return sshtransport.HostKeyPolicy{}, "", err
	}
	if len(known) == 0 {
		return sshtransport.HostKeyPolicy{}, "", usagef("--host-key-policy strict: %s has no key for %s; pass --host-key, or use --host-key-policy tofu", o.knownHosts, knownhosts.Normalize(addr))
	}
	return sshtransport.Strict(known[0]), "host key pinned to " + ssh.FingerprintSHA256(known[0]) + " from " + o.knownHosts, nil
}

// agentBuild returns a local file holding the ggagent build for arch, its
// SHA-256 and size: from dist, or downloaded from the broker (checked
// against its X-Checksum-Sha256).
func agentBuild(c *cmdCtx, dist, arch string) (path, sum string, size int64, cleanup func(), err error) {
	cleanup = func() {}
	if dist != "" {
		path = filepath.Join(dist, "ggagent_linux_"+arch)
		f, err := os.Open(path)
		if err != nil {
			return "", "", 0, cleanup, fmt.Errorf("--agent-dist: %w (make cross builds ggagent_linux_<arch>)", err)
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return "", "", 0, cleanup, fmt.Errorf("read %s: %w", path, err)
		}
		return path, hex.EncodeToString(h.Sum(nil)), n, cleanup, nil
	}
	tmp, err := os.CreateTemp("", "ggagent-download-*")
	if err != nil {
		return "", "", 0, cleanup, err
	}
	cleanup = func() { os.Remove(tmp.Name()) }
	defer tmp.Close()
	path = "/downloads/ggagent/linux/" + arch
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	hdr, err := c.api.Download(c.ctx, path, cw)
	if err != nil {
		return "", "", 0, cleanup, fmt.Errorf("download the ggagent build for linux/%s from the broker: %w (or pass --agent-dist DIR)", arch, err)
	}
	u, n := c.api.BaseURL()+path, cw.n
	want := strings.ToLower(hdr.Get("X-Checksum-Sha256"))
	sum = hex.EncodeToString(h.Sum(nil))
	if want == "" {
		return "", "", 0, cleanup, fmt.Errorf("download %s: the broker sent no X-Checksum-Sha256", u)
	}
	if want != sum {
		return "", "", 0, cleanup, fmt.Errorf("download %s: %w: got sha256 %s, the broker says %s", u, patcher.ErrChecksum, sum, want)
	}
	return tmp.Name(), sum, n, cleanup, nil
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// linePrefixer writes each line it gets to w with a prefix; safe for the
// two output streams of one command.
type linePrefixer struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

var prefixMu sync.Mutex

func prefixWriter(w io.Writer, prefix string) *linePrefixer {
	return &linePrefixer{mu: &prefixMu, w: w, prefix: prefix}
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// flush writes a last line without a newline.
func (p *linePrefixer) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		sc := bufio.NewScanner(strings.NewReader(string(p.buf)))
		for sc.Scan() {
			fmt.Fprintf(p.w, "%s%s\n", p.prefix, sc.Text())
		}
		p.buf = nil
	}
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
