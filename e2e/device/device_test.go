//go:build devicetest

package device

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/packaging"
)

// TestFreshDevice installs, restarts, reboots and removes ggagent on fresh
// Debian devices, once from the .deb and once with the served install.sh.
func TestFreshDevice(t *testing.T) {
	requireTools(t)
	dist := distDir(t)
	tarPath := rootfsTar(t)

	t.Run("deb", func(t *testing.T) {
		deb := newest(t, filepath.Join(dist, "ggagent_*_amd64.deb"))
		b := startBroker(t, dist)
		b.readyCore("dev-deb")
		token := b.enrollmentToken("dev-deb")
		c := newContainer(t, tarPath)
		data, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.dir, "root/ggagent.deb"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		out := c.exec(2*time.Minute, "dpkg", "-i", "/root/ggagent.deb")
		t.Logf("dpkg -i:\n%s", out)
		if got := c.sh(time.Minute, "systemctl is-active ggagent || true"); strings.TrimSpace(got) == "active" {
			t.Fatal("the package started ggagent before enrollment")
		}
		start := time.Now()
		out = c.exec(3*time.Minute, "env", "GGAGENT_TOKEN="+token, "ggagent", "install", "--broker", b.url,
			"--core", "dev-deb", "--runtime", "simulated")
		t.Logf("ggagent install:\n%s", out)
		checkRunning(t, c, b, "dev-deb", start, "/usr/bin/ggagent")

		// Upgrade: a newer package over the running install keeps the state
		// dir and the identity, and the service comes back by itself.
		identityBefore := c.exec(time.Minute, "cat", "/var/lib/ggagent/identity.json")
		upgrade := bumpedDeb(t, deb, "99.0.0")
		if err := os.WriteFile(filepath.Join(c.dir, "root/ggagent-upgrade.deb"), upgrade, 0o644); err != nil {
			t.Fatal(err)
		}
		upgraded := time.Now()
		out = c.exec(2*time.Minute, "dpkg", "-i", "/root/ggagent-upgrade.deb")
		t.Logf("dpkg -i (upgrade):\n%s", out)
		if strings.Contains(out, "downgrading") {
			t.Fatal("dpkg took the newer package for a downgrade: the built package's version does not sort as older than 99.0.0")
		}
		if v := c.sh(time.Minute, "dpkg-query -W -f '${Version}' ggagent"); strings.TrimSpace(v) != "99.0.0" {
			t.Fatalf("installed version after the upgrade = %q", v)
		}
		if after := c.exec(time.Minute, "cat", "/var/lib/ggagent/identity.json"); after != identityBefore {
			t.Fatalf("the upgrade changed identity.json:\nbefore %s\nafter  %s", identityBefore, after)
		}
		checkRunning(t, c, b, "dev-deb", upgraded, "/usr/bin/ggagent")

		out = c.sh(2*time.Minute, "ggagent uninstall && dpkg --purge ggagent")
		t.Logf("ggagent uninstall; dpkg --purge ggagent:\n%s", out)
		for _, want := range []string{"Kept the state directory", "ggagent: purged; deleted /var/lib/ggagent"} {
			if !strings.Contains(out, want) {
				t.Errorf("uninstall output lacks %q", want)
			}
		}
		checkRemoved(t, c, "/usr/bin/ggagent", "/var/lib/ggagent")
	})

	for _, tc := range []struct {
		name, core string
		extra      []string // ggfleet serve flags
		curl       string   // how the device fetches install.sh
	}{
		{"install.sh", "dev-sh", nil, "curl -fsSL"},
		// Over https the device runs the exact command the broker's banner
		// prints: the very first download is pinned (--pinnedpubkey, the
		// broker's CA as --cacert), and the script it serves carries the CA
		// pin on to ggagent install.
		{"install.sh-tls-auto", "dev-tls", []string{"--tls-auto"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, dist, tc.extra...)
			b.readyCore(tc.core)
			token := b.enrollmentToken(tc.core)
			c := newContainer(t, tarPath)
			curl := tc.curl
			if curl == "" {
				curl = b.bannerCurl(c)
				// The pin is what protects the first download: a wrong one fails.
				wrong := regexp.MustCompile(`sha256//[A-Za-z0-9+/=]+`).ReplaceAllString(curl, "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
				if _, err := c.execErr(time.Minute, "sh", "-c", wrong+" "+b.url+"/install.sh > /dev/null"); err == nil {
					t.Fatal("install.sh downloaded with a wrong --pinnedpubkey")
				}
			}
			start := time.Now()
			out := c.sh(3*time.Minute, fmt.Sprintf("%s %s/install.sh | sh -s -- --core %s --token %s --runtime simulated", curl, b.url, tc.core, token))
			t.Logf("install.sh:\n%s", out)
			if tc.extra != nil && !strings.Contains(c.sh(10*time.Second, "cat /var/lib/ggagent/*.json"), `"caSha256"`) {
				t.Error("the identity records no CA pin after a --tls-auto install")
			}
			checkRunning(t, c, b, tc.core, start, "/usr/local/bin/ggagent")

			out = c.exec(2*time.Minute, "ggagent", "uninstall", "--purge")
			t.Logf("ggagent uninstall --purge:\n%s", out)
			if !strings.Contains(out, "Removed the state directory /var/lib/ggagent") {
				t.Errorf("uninstall --purge output does not say it removed the state directory")
			}
			if !strings.Contains(out, "Kept the ggagent program /usr/local/bin/ggagent") {
				t.Errorf("uninstall --purge output does not say it kept the program install.sh placed")
			}
			checkRemoved(t, c, "/var/lib/ggagent") // the binary install.sh put in /usr/local/bin stays
		})
	}
}

// checkRunning asserts the installed service: active and enabled, the
// unit ggagent install renders, the core HEALTHY and ONLINE, and all of
// that again after systemctl restart and after a container reboot.
func checkRunning(t *testing.T, c *container, b *broker, core string, since time.Time, exe string) {
	t.Helper()
	serviceUp(t, c)
	want, err := packaging.RenderAgentUnit(exe, []string{"run", "--state-dir", "/var/lib/ggagent", "--runtime", "simulated"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(c.dir, "etc/systemd/system/ggagent.service"))
	if err != nil {
		t.Fatalf("the installed unit: %v", err)
	}
	if string(got) != want {
		t.Errorf("/etc/systemd/system/ggagent.service:\n%s\nwant:\n%s", got, want)
	}
	b.waitOnline(core, since.Add(-time.Second))

	t.Log("systemctl restart ggagent")
	restarted := time.Now()
	c.exec(time.Minute, "systemctl", "restart", "ggagent")
	serviceUp(t, c)
	b.waitOnline(core, restarted)

	t.Log("reboot")
	c.reboot()
	rebooted := time.Now()
	serviceUp(t, c)
	b.waitOnline(core, rebooted)
}

// serviceUp waits until ggagent.service is active and checks it is enabled.
func serviceUp(t *testing.T, c *container) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := c.execErr(10*time.Second, "systemctl", "is-active", "ggagent")
		if strings.TrimSpace(out) == "active" {
			break
		}
		if time.Now().After(deadline) {
			st, _ := c.execErr(10*time.Second, "systemctl", "status", "--no-pager", "ggagent")
			t.Fatalf("ggagent.service is %q, want active:\n%s", strings.TrimSpace(out), st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, _ := c.execErr(10*time.Second, "systemctl", "is-enabled", "ggagent"); strings.TrimSpace(out) != "enabled" {
		t.Fatalf("systemctl is-enabled ggagent = %q, want enabled", strings.TrimSpace(out))
	}
}

// checkRemoved asserts no ggagent unit is left (loaded or on disk) and
// the given paths are gone.
func checkRemoved(t *testing.T, c *container, gone ...string) {
	t.Helper()
	if out, _ := c.execErr(10*time.Second, "systemctl", "list-unit-files", "--no-legend", "ggagent.service"); strings.TrimSpace(out) != "" {
		t.Errorf("systemctl list-unit-files ggagent.service still lists:\n%s", out)
	}
	if out, _ := c.execErr(10*time.Second, "systemctl", "is-active", "ggagent"); strings.TrimSpace(out) == "active" {
		t.Error("ggagent.service is still active")
	}
	left := c.sh(10*time.Second, "find /etc/systemd /lib/systemd /usr/lib/systemd /run/systemd/system -name 'ggagent*' 2>/dev/null || true")
	if strings.TrimSpace(left) != "" {
		t.Errorf("ggagent unit files left behind:\n%s", left)
	}
	for _, p := range gone {
		if _, err := os.Lstat(filepath.Join(c.dir, p)); err == nil {
			t.Errorf("%s is still there", p)
		}
	}
}

// bumpedDeb repacks a .deb with another version, to test the upgrade path
// with the real maintainer scripts and contents.
func bumpedDeb(t *testing.T, deb, version string) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pkg")
	if out, err := exec.Command("dpkg-deb", "-R", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R: %v\n%s", err, out)
	}
	control := filepath.Join(dir, "DEBIAN", "control")
	data, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Version:") {
			l = "Version: " + version
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(control, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "upgrade.deb")
	if msg, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", dir, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -b: %v\n%s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newest returns the most recently built file matching pattern (dist/
// may hold packages of earlier versions too).
func newest(t *testing.T, pattern string) string {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	best, bestTime := "", time.Time{}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(bestTime) {
			best, bestTime = f, fi.ModTime()
		}
	}
	if best == "" {
		t.Fatalf("no %s: run make package", pattern)
	}
	return best
}

// distDir returns the repository's dist/ (DIST overrides), where
// `make package` put the cross builds, the .debs and ggfleet.
func distDir(t *testing.T) string {
	t.Helper()
	dist := os.Getenv("DIST")
	if dist == "" {
		dist = filepath.Join("..", "..", "dist")
	}
	dist, err := filepath.Abs(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ggfleet_linux_amd64", "ggagent_linux_amd64"} {
		if _, err := os.Stat(filepath.Join(dist, f)); err != nil {
			t.Fatalf("%s: run make package first (make e2e-device does)", err)
		}
	}
	return dist
}

// broker is a `ggfleet serve` on the host, on free 127.0.0.1 ports the
// container (sharing the host network) reaches too.
type broker struct {
	t       *testing.T
	dataDir string
	url     string
	token   string
	logPath string
	client  *http.Client
}

// bannerCurl returns the curl part of the pinned install command the
// broker's --tls-auto banner prints, with the CA file it names copied onto
// the device.
func (b *broker) bannerCurl(c *container) string {
	b.t.Helper()
	re := regexp.MustCompile(`curl -fsSL --pinnedpubkey '(sha256//[A-Za-z0-9+/=]+)' --cacert (\S+) `)
	var m []string
	deadline := time.Now().Add(30 * time.Second)
	for m == nil {
		data, _ := os.ReadFile(b.logPath)
		m = re.FindStringSubmatch(string(data))
		if m == nil && time.Now().After(deadline) {
			b.t.Fatalf("the --tls-auto banner has no pinned curl command:\n%s", tail(string(data), 3000))
		}
		if m == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
	pem, err := os.ReadFile(m[2])
	if err != nil {
		b.t.Fatalf("the banner's --cacert file: %v", err)
	}
	// The operator copies the CA file to the device; /tmp inside the booted
	// container is a fresh tmpfs, so it goes to /root.
	const onDevice = "/root/ggfleet-ca.pem"
	if err := os.WriteFile(filepath.Join(c.dir, onDevice), pem, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return fmt.Sprintf("curl -fsSL --pinnedpubkey '%s' --cacert %s", m[1], onDevice)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startBroker starts dist/ggfleet_linux_amd64 serving the downloads in dist.
func startBroker(t *testing.T, dist string, extra ...string) *broker {
	t.Helper()
	data := t.TempDir()
	listen := freeAddr(t)
	b := &broker{t: t, dataDir: data, url: "http://" + listen, logPath: filepath.Join(data, "broker.log"),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // the test's admin client; the device verifies the broker
		}}}}
	for _, a := range extra {
		if a == "--tls-auto" {
			b.url = "https://" + listen
		}
	}
	logf, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--data-dir", data, "--listen", listen, "--mqtt-listen", freeAddr(t),
		"--downloads-dir", dist, "--log-level", "debug"}, extra...)
	cmd := exec.Command(filepath.Join(dist, "ggfleet_linux_amd64"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			data, _ := os.ReadFile(b.logPath)
			t.Logf("ggfleet log (tail):\n%s", tail(string(data), 8000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			data, _ := os.ReadFile(b.logPath)
			t.Fatalf("ggfleet serve exited early:\n%s", data)
		default:
		}
		if resp, err := b.client.Get(b.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ggfleet serve not ready after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatalf("read the admin token: %v", err)
	}
	b.token = strings.TrimSpace(string(tok))
	return b
}

// do sends an API request with the admin token and decodes a JSON answer into out.
func (b *broker) do(want int, method, path string, body, out any) http.Header {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, b.url+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.aws-cdf-v1.0+json")
	req.Header.Set("Accept", "application/vnd.aws-cdf-v1.0+json")
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		b.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			b.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp.Header
}

// readyCore creates a core and waits for its creation task to succeed.
func (b *broker) readyCore(name string) {
	b.t.Helper()
	h := b.do(202, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Create", "cores": []any{
		map[string]any{"name": name, "provisioningTemplate": "ggfleet-core", "provisioningParameters": map[string]string{"ThingName": name}}}}, nil)
	id := h.Get("x-taskid")
	waitFor(b.t, 2*time.Minute, "core task "+id, func() bool {
		var task map[string]any
		b.do(200, "GET", "/coreTasks/"+id, nil, &task)
		switch task["taskStatus"] {
		case "Success":
			return true
		case "Failure":
			b.t.Fatalf("core task for %s failed: %v", name, task)
		}
		return false
	})
}

// enrollmentToken makes a one-time enrollment token for a core.
func (b *broker) enrollmentToken(core string) string {
	b.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	b.do(201, "POST", "/cores/"+core+"/enrollmentTokens", map[string]any{}, &tok)
	return tok.Token
}

// waitOnline waits until GET /cores/{core} shows the device HEALTHY and
// ONLINE, seen after since.
func (b *broker) waitOnline(core string, since time.Time) {
	b.t.Helper()
	var d map[string]any
	waitFor(b.t, 2*time.Minute, core+" HEALTHY and ONLINE", func() bool {
		var c struct {
			Device map[string]any `json:"device"`
		}
		b.do(200, "GET", "/cores/"+core, nil, &c)
		d = c.Device
		s, _ := d["lastSeenAt"].(string)
		seen, err := time.Parse(time.RFC3339Nano, s)
		return d["status"] == "HEALTHY" && d["connectivity"] == "ONLINE" && err == nil && seen.After(since)
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
