//go:build devicetest

package device

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshRootfsTar returns the cached root file system with openssh-server
// added to the base one (built once from it with apt-get in a chroot).
func sshRootfsTar(t *testing.T, base string) string {
	t.Helper()
	tarPath := filepath.Join(filepath.Dir(base), "bookworm-ssh-rootfs.tar")
	if _, err := os.Stat(tarPath); err == nil {
		t.Logf("reusing the cached root file system %s", tarPath)
		return tarPath
	}
	build, err := os.MkdirTemp(filepath.Dir(base), "build-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(build)
	root := filepath.Join(build, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run(t, 5*time.Minute, "tar", "-C", root, "--numeric-owner", "-xpf", base)
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	_ = os.Remove(filepath.Join(root, "etc/resolv.conf"))
	if err := os.WriteFile(filepath.Join(root, "etc/resolv.conf"), resolv, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, 10*time.Minute, "chroot", root, "env", "DEBIAN_FRONTEND=noninteractive", containerPath, "sh", "-c",
		"apt-get update && apt-get install -y --no-install-recommends openssh-server && apt-get clean && rm -rf /var/lib/apt/lists/*")
	tmp := tarPath + ".tmp"
	run(t, 5*time.Minute, "tar", "-C", root, "--numeric-owner", "-cf", tmp, ".")
	if err := os.Rename(tmp, tarPath); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", tarPath, time.Since(start).Round(time.Second))
	return tarPath
}

// TestBootstrapOverSSH is the check for `ggfleet cores bootstrap`:
// a fresh systemd-booted Debian device reached over SSH gets the broker's
// ggagent build and `ggagent install` with a fresh token; the core
// enrolls, its service runs and it reports health.
func TestBootstrapOverSSH(t *testing.T) {
	requireTools(t)
	dist := distDir(t)
	tarPath := sshRootfsTar(t, rootfsTar(t))
	b := startBroker(t, dist)
	b.readyCore("dev-boot")
	c := newContainer(t, tarPath)

	// The device's sshd: root logs in with a key, on a free port (the
	// container shares the host's network).
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	local := t.TempDir()
	keyFile := filepath.Join(local, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(c.dir, "root/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "root/.ssh/authorized_keys"), ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("Port %s\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n", port)
	if err := os.WriteFile(filepath.Join(c.dir, "etc/ssh/sshd_config.d/ggfleet-test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.exec(time.Minute, "systemctl", "restart", "ssh")
	hostKey := strings.TrimSpace(c.exec(10*time.Second, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"))

	// Strict host key checking with the key read from the device's disk.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dist, "ggfleet_linux_amd64"), "cores", "bootstrap",
		"--ssh", "root@"+addr, "--core", "dev-boot", "--identity", keyFile,
		"--host-key-policy", "strict", "--host-key", hostKey, "--known-hosts", filepath.Join(local, "known_hosts"),
		"--install-arg=--runtime=simulated")
	cmd.Env = append(os.Environ(), "GGFLEET_BROKER_URL="+b.url, "GGFLEET_TOKEN="+b.token)
	out, err := cmd.CombinedOutput()
	t.Logf("ggfleet cores bootstrap:\n%s", out)
	if err != nil {
		t.Fatalf("ggfleet cores bootstrap: %v", err)
	}
	for _, want := range []string{"device architecture: x86_64 (linux/amd64)", "checksum verified on the device", "core dev-boot bootstrapped"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bootstrap output lacks %q", want)
		}
	}
	serviceUp(t, c)
	b.waitOnline("dev-boot", start.Add(-time.Second))
	if _, err := os.Stat(filepath.Join(c.dir, "usr/local/bin/ggagent")); err != nil {
		t.Errorf("ggagent is not at /usr/local/bin/ggagent: %v", err)
	}
}
