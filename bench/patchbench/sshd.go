package main

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// benchUser is the login the SSH targets are reached as: a plain /bin/sh
// account with no shell start-up files, like the busybox or dash login of
// an embedded device. Root's login shell on a build machine may source
// heavy rc files (pyenv, cargo) on every SSH session, which would measure
// the machine, not the patching.
const benchUser = "ggbench"

// sshServer is one OpenSSH sshd on 127.0.0.1 with its own keys and config,
// tuned for many concurrent connections (MaxStartups, MaxSessions).
type sshServer struct {
	Addr       string
	Port       string
	User       string // the login, benchUser
	UID, GID   int
	HostKey    ssh.PublicKey
	ClientKey  []byte // OpenSSH private key PEM accepted for User
	KeyFile    string // ClientKey on disk (0600) for the OpenSSH client
	KnownHosts string // known_hosts naming Addr's host key

	cmd  *exec.Cmd
	done chan struct{}
}

// startSSHD writes keys and an sshd_config under dir and starts sshd -D.
func startSSHD(dir string) (*sshServer, error) {
	bin, err := exec.LookPath("sshd")
	if err != nil {
		bin = "/usr/sbin/sshd"
		if _, serr := os.Stat(bin); serr != nil {
			return nil, fmt.Errorf("sshd not found: install it with `apt-get install -y openssh-server`")
		}
	}
	if bin, err = filepath.Abs(bin); err != nil { // sshd re-execs itself: absolute path
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("needs root: sshd must run as root to log users in")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("create /run/sshd (sshd's privilege separation dir): %w", err)
	}
	s := &sshServer{done: make(chan struct{}), User: benchUser}
	if s.UID, s.GID, err = ensureUser(benchUser); err != nil {
		return nil, err
	}
	hostPub, hostPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	clientPub, clientPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	s.HostKey, s.ClientKey = hostPub, clientPEM
	s.KeyFile = filepath.Join(dir, "client_key")
	// sshd reads authorized_keys as the logging-in user: it (and dir) must
	// be readable by benchUser; the private keys stay 0600.
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"host_key", hostPEM, 0o600}, {"client_key", clientPEM, 0o600}, {"authorized_keys", ssh.MarshalAuthorizedKey(clientPub), 0o644}}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.Addr = l.Addr().String()
	l.Close()
	_, s.Port, _ = net.SplitHostPort(s.Addr)
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	kh := "[127.0.0.1]:" + s.Port + " " + string(ssh.MarshalAuthorizedKey(hostPub))
	if err := os.WriteFile(s.KnownHosts, []byte(kh), 0o600); err != nil {
		return nil, err
	}
	cfg := strings.Join([]string{
		"Port " + s.Port, "ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(dir, "host_key"), "PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"AllowUsers " + benchUser, "StrictModes no", "UsePAM no",
		"PasswordAuthentication no", "KbdInteractiveAuthentication no", "LogLevel ERROR",
		// 50 clients may connect within a second: never drop a startup.
		"MaxStartups 1000", "MaxSessions 100",
		"Subsystem sftp internal-sftp", "",
	}, "\n")
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command(bin, "-t", "-f", cfgPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sshd -t rejected the config: %v: %s", err, out)
	}
	s.cmd = exec.Command(bin, "-D", "-e", "-f", cfgPath)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(os.Stderr, "sshd:", sc.Text())
		}
		_ = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("sshd exited before listening on %s", s.Addr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("sshd did not listen on %s within 10s: %w", s.Addr, err)
		}
	}
}

// stop kills sshd and its connection processes (its process group).
func (s *sshServer) stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

// openSSHArgs are the OpenSSH client options that log in as root with the
// client key and check the host key strictly.
func (s *sshServer) openSSHArgs() []string {
	return []string{"-i", s.KeyFile, "-o", "UserKnownHostsFile=" + s.KnownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}
}

// ensureUser creates the login name (shell /bin/sh, home /tmp, no home
// files, key login only) unless it exists, and returns its uid and gid.
// The password field is "*" (no password) rather than useradd's "!"
// (locked): sshd refuses every login of a locked account.
func ensureUser(name string) (uid, gid int, err error) {
	if exec.Command("id", "-u", name).Run() != nil {
		if out, err := exec.Command("useradd", "-M", "-d", "/tmp", "-s", "/bin/sh", "-p", "*", name).CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("useradd %s: %v: %s", name, err, out)
		}
	}
	if out, err := exec.Command("usermod", "-p", "*", name).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("usermod -p '*' %s (unlock for key login): %v: %s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

func newKey() (ssh.PublicKey, []byte, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return sp, pem.EncodeToMemory(blk), nil
}
