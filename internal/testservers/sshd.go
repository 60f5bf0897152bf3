package testservers

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Test login used for password, keyboard-interactive and sudo tests. It is
// created (as root) on first use and its password reset every time.
const (
	PasswordUser = "ggpatch"
	Password     = "ggpatch-test-pw-7"
)

// SSHDOptions selects how the test sshd is configured.
type SSHDOptions struct {
	// NoSFTP leaves out the sftp subsystem, like dropbear images without
	// sftp-server.
	NoSFTP bool
	// KbdInteractive makes keyboard-interactive (through PAM) the only
	// password-style method; password authentication is then off.
	KbdInteractive bool
}

// SSHD is a running OpenSSH server on 127.0.0.1.
type SSHD struct {
	Addr string
	// HostKey is the server's public host key (for strict pinning).
	HostKey ssh.PublicKey
	// ClientKeyPEM is an OpenSSH private key accepted for root and
	// PasswordUser.
	ClientKeyPEM []byte

	t    testing.TB
	opts SSHDOptions
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartSSHD writes an sshd_config, host key and authorized_keys into a
// temporary directory, creates PasswordUser (password Password, sudo with
// password) and starts /usr/sbin/sshd -D on a free port. The server and its
// connection processes are killed in t.Cleanup.
func StartSSHD(t testing.TB, opts SSHDOptions) *SSHD {
	t.Helper()
	need(t, "sshd", "openssh-server")
	needRoot(t, "sshd must run as root to log in users and check passwords")
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("create /run/sshd (sshd's privilege separation dir): %v", err)
	}
	ensurePasswordUser(t)

	dir := t.TempDir()
	// sshd reads authorized_keys as the logging-in user: let PasswordUser
	// traverse to it.
	for d := dir; d != os.TempDir() && d != "/" && strings.HasPrefix(d, os.TempDir()); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	s := &SSHD{t: t, opts: opts, dir: dir}

	_, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	s.ClientKeyPEM = pem.EncodeToMemory(blk)
	signer, err := ssh.NewSignerFromKey(clientPriv)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	l.Close()

	s.newHostKey()
	s.start()
	t.Cleanup(s.stop)
	return s
}

// ChangeHostKey restarts the server on the same address with a new host
// key, as if the device had been replaced (or someone is in the middle).
func (s *SSHD) ChangeHostKey() {
	s.t.Helper()
	s.stop()
	s.newHostKey()
	s.start()
}

// DropConnections kills the sshd processes serving current connections
// (monitors and their unprivileged children; the listener stays), so
// clients see the connection die mid-command.
func (s *SSHD) DropConnections() {
	s.mu.Lock()
	pid := s.cmd.Process.Pid
	s.mu.Unlock()
	var walk func(int)
	walk = func(p int) {
		for _, c := range children(p) {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(c) + "/comm")
			if strings.TrimSpace(string(comm)) != "sshd" {
				continue
			}
			walk(c)
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
	}
	walk(pid)
}

func (s *SSHD) newHostKey() {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		s.t.Fatal(err)
	}
	writeFile(s.t, filepath.Join(s.dir, "host_key"), pem.EncodeToMemory(blk), 0o600)
	s.HostKey, err = ssh.NewPublicKey(pub)
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *SSHD) start() {
	t := s.t
	t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "Port %s\nListenAddress 127.0.0.1\n", port)
	fmt.Fprintf(&cfg, "HostKey %s\nPidFile %s\n", filepath.Join(s.dir, "host_key"), filepath.Join(s.dir, "sshd.pid"))
	fmt.Fprintf(&cfg, "AuthorizedKeysFile %s\n", filepath.Join(s.dir, "authorized_keys"))
	cfg.WriteString("PermitRootLogin prohibit-password\nStrictModes no\nLogLevel ERROR\nMaxStartups 100\n")
	if s.opts.KbdInteractive {
		cfg.WriteString("UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes\n")
	} else {
		cfg.WriteString("UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n")
	}
	if !s.opts.NoSFTP {
		cfg.WriteString("Subsystem sftp internal-sftp\n")
	}
	cfgPath := filepath.Join(s.dir, "sshd_config")
	writeFile(t, cfgPath, []byte(cfg.String()), 0o644)

	sshd, err := exec.LookPath("sshd")
	if err != nil {
		t.Fatal(err)
	}
	sshd, _ = filepath.Abs(sshd) // sshd refuses to re-exec itself from a relative path
	if out, err := exec.Command(sshd, "-t", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t rejected the test config: %v\n%s", err, out)
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		// Drain sshd's log so it never blocks; errors are shown if a test
		// fails.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Logf("sshd: %s", sc.Text())
		}
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	// Ready when it accepts connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("sshd did not listen on %s within 10s: %v", s.Addr, err)
		}
		select {
		case <-done:
			t.Fatalf("sshd exited before listening (see sshd: log lines)")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *SSHD) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pid := cmd.Process.Pid
	kids := children(pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, c := range kids {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("sshd (pid %d) did not exit after SIGKILL", pid)
	}
}

var userOnce sync.Once
var userErr error

// ensurePasswordUser creates PasswordUser if needed, sets its password and
// lets it sudo with that password.
func ensurePasswordUser(t testing.TB) {
	t.Helper()
	userOnce.Do(func() {
		if exec.Command("id", "-u", PasswordUser).Run() != nil {
			if out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", PasswordUser).CombinedOutput(); err != nil {
				userErr = fmt.Errorf("useradd %s: %v: %s", PasswordUser, err, out)
				return
			}
		}
		c := exec.Command("chpasswd")
		c.Stdin = strings.NewReader(PasswordUser + ":" + Password + "\n")
		if out, err := c.CombinedOutput(); err != nil {
			userErr = fmt.Errorf("chpasswd: %v: %s", err, out)
			return
		}
		if _, err := os.Stat("/etc/sudoers.d"); err == nil {
			userErr = os.WriteFile("/etc/sudoers.d/ggpatch-test", []byte(PasswordUser+" ALL=(ALL:ALL) ALL\n"), 0o440)
		}
	})
	if userErr != nil {
		t.Fatalf("prepare test user: %v", userErr)
	}
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
