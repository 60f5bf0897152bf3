package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"golang.org/x/crypto/ssh"
)

// TestCoresBootstrapSSH runs `ggfleet cores bootstrap` against a real
// OpenSSH server on 127.0.0.1: the real ggagent build is downloaded from
// the broker, uploaded over SSH with its checksum checked, and `ggagent
// install` enrolls the core; the installed agent then reports health.
func TestCoresBootstrapSSH(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("the bootstrap test runs the host's own ggagent build on linux/amd64 or linux/arm64")
	}
	sshd := testservers.StartSSHD(t, testservers.SSHDOptions{})
	dist := t.TempDir()
	build, err := os.ReadFile(filepath.Join(binDir, "ggagent"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dist, "ggagent_linux_"+runtime.GOARCH), build, 0o755); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, "--downloads-dir", dist)
	logBrokerOnFailure(t, b)
	b.cli("cores", "create", "--template", "ggfleet-core", "boot-1").wantCode(t, 0)

	local := t.TempDir()
	key := filepath.Join(local, "id_ed25519")
	if err := os.WriteFile(key, sshd.ClientKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	knownHosts := filepath.Join(local, "known_hosts")
	device := t.TempDir() // the "device" is this host; its files go here
	remote := filepath.Join(device, "bin", "ggagent")
	state := filepath.Join(device, "state")
	args := func(extra ...string) []string {
		return append([]string{"cores", "bootstrap", "--ssh", "root@" + sshd.Addr, "--core", "boot-1", "--identity", key,
			"--known-hosts", knownHosts, "--remote-path", remote,
			"--install-arg=--runtime=simulated", "--install-arg=--no-service", "--install-arg=--state-dir=" + state}, extra...)
	}

	r := b.cli(args()...).wantCode(t, 0)
	t.Logf("ggfleet cores bootstrap:\n%s", r.stdout)
	fp := ssh.FingerprintSHA256(sshd.HostKey)
	for _, want := range []string{"first use: trusting the host key", "host key " + fp, "[2/6] device architecture:", "checksum verified on the device",
		"[6/6] run on the device:", "core boot-1 bootstrapped"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bootstrap output lacks %q:\n%s", want, r.stdout)
		}
	}
	kh, err := os.ReadFile(knownHosts)
	if err != nil || !strings.Contains(string(kh), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshd.HostKey)))) {
		t.Errorf("known_hosts does not hold the host key: %v\n%s", err, kh)
	}
	got, err := os.ReadFile(remote)
	if err != nil {
		t.Fatalf("ggagent was not copied to the device: %v", err)
	}
	if a, b := sha256.Sum256(got), sha256.Sum256(build); hex.EncodeToString(a[:]) != hex.EncodeToString(b[:]) {
		t.Fatal("the copied ggagent differs from the build")
	}
	if strings.Contains(r.stdout, "GGAGENT_TOKEN=") {
		t.Error("the token is printed")
	}

	// The enrolled core reports health with the installed agent.
	start := time.Now()
	startAgent(t, state)
	b.waitOnline("boot-1", start.Add(-time.Second))

	// A second run resumes (everything is done already) with the pinned key.
	b.cli(args("--host-key-policy", "strict", "-o", "json")...).wantCode(t, 0)

	// A changed host key is refused before anything runs on the device.
	sshd.ChangeHostKey()
	r = b.cli(args()...).wantCode(t, 1)
	if !strings.Contains(r.stderr, "host key mismatch") || !strings.Contains(r.stderr, fp) {
		t.Errorf("changed host key: %s", r.stderr)
	}
	b.cli(args("--host-key-policy", "strict", "--host-key", "nonsense")...).wantCode(t, 2)
	if r := b.cli("cores", "bootstrap", "--ssh", "root@"+sshd.Addr, "--core", "no-such-core", "--identity", key).wantCode(t, 1); !strings.Contains(r.stderr, "create it first") {
		t.Errorf("unknown core: %s", r.stderr)
	}
}
