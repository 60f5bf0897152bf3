//go:build devicetest

package device

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// containerPath is the PATH commands run with inside the container.
const containerPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// requireTools skips the test when a tool is missing on a developer's
// machine, and fails it in CI (CI set), where .ci/run installs them.
func requireTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		need(t, "the fresh-device test must run as root (debootstrap, systemd-nspawn)")
	}
	for _, tool := range []string{"debootstrap", "systemd-nspawn", "nsenter", "tar", "pgrep"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, tool+" is not installed: apt-get install debootstrap systemd-container util-linux procps")
		}
	}
}

func need(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skip(why)
	}
	t.Fatal(why)
}

// rootfsTar returns the cached minimal Debian root file system tarball,
// building it with debootstrap first when it is missing (~2 min).
func rootfsTar(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("GGFLEET_DEVICE_CACHE")
	if cache == "" {
		cache = "/var/cache/ggfleet-device"
	}
	tarPath := filepath.Join(cache, "bookworm-rootfs.tar")
	if _, err := os.Stat(tarPath); err == nil {
		t.Logf("reusing the cached root file system %s", tarPath)
		return tarPath
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	build, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(build)
	root := filepath.Join(build, "rootfs")
	start := time.Now()
	run(t, 15*time.Minute, "debootstrap", "--variant=minbase",
		"--include=systemd,systemd-sysv,dbus,ca-certificates,curl,procps",
		"bookworm", root, "http://deb.debian.org/debian")
	if err := os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("ggfleet-device\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, "chroot", root, "passwd", "-d", "root")
	for _, dir := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		entries, _ := os.ReadDir(filepath.Join(root, dir))
		for _, e := range entries {
			if e.Type().IsRegular() {
				os.Remove(filepath.Join(root, dir, e.Name()))
			}
		}
	}
	tmp := tarPath + ".tmp"
	run(t, 5*time.Minute, "tar", "-C", root, "--numeric-owner", "-cf", tmp, ".")
	if err := os.Rename(tmp, tarPath); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the root file system %s in %s", tarPath, time.Since(start).Round(time.Second))
	return tarPath
}

// run runs a host command and fails the test when it fails.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(string(out), 4000))
	}
	return string(out)
}

// container is one Debian root file system booted with systemd as PID 1
// under systemd-nspawn.
type container struct {
	t      *testing.T
	dir    string // the root file system
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	leader int // the container's systemd (PID 1 inside), as seen from the host
	logf   *os.File
	boots  int
}

// newContainer unpacks a fresh copy of the cached root file system and
// boots it; t.Cleanup powers it off.
func newContainer(t *testing.T, tarPath string) *container {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "ggfleet-device-")
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	c := &container{t: t, dir: dir, name: "ggdev-" + hex.EncodeToString(suffix)}
	t.Cleanup(func() {
		c.poweroff()
		unmountUnder(t, dir)
		os.RemoveAll(dir)
		if t.Failed() {
			t.Logf("console log of %s:\n%s", c.name, c.log())
		}
		os.Remove(dir + ".log")
	})
	run(t, 5*time.Minute, "tar", "-C", dir, "--numeric-owner", "-xpf", tarPath)
	c.boot()
	return c
}

// boot starts systemd-nspawn on the root file system and waits until
// systemd inside reports running (or degraded).
func (c *container) boot() {
	t := c.t
	t.Helper()
	c.boots++
	logPath := c.dir + ".log"
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n==== boot %d at %s\n", c.boots, time.Now().Format(time.RFC3339))
	c.logf = f
	c.cmd = exec.Command("systemd-nspawn", "-D", c.dir, "-b", "--register=no", "--keep-unit",
		"-M", c.name, "--console=read-only")
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(c.cmd, c.done)
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	state := ""
	for {
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn exited during boot %d; log:\n%s", c.boots, c.log())
		default:
		}
		if c.leader == 0 {
			c.leader = childNamed(c.cmd.Process.Pid, "systemd")
		}
		if c.leader != 0 {
			out, _ := c.execErr(10*time.Second, "systemctl", "is-system-running")
			state = strings.TrimSpace(out)
			if state == "running" || state == "degraded" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("boot %d: systemd not running after 90s (state %q); log:\n%s", c.boots, state, c.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("boot %d of %s: %s in %s", c.boots, c.name, state, time.Since(start).Round(10*time.Millisecond))
	if state == "degraded" {
		out, _ := c.execErr(10*time.Second, "systemctl", "--failed", "--no-legend")
		t.Logf("failed units (not fatal):\n%s", out)
	}
}

// childNamed returns the PID of ppid's child whose comm is name, or 0.
func childNamed(ppid int, name string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) < 2 || s[open+1:close] != name {
			continue
		}
		if p, _ := strconv.Atoi(fields[1]); p == ppid {
			return pid
		}
	}
	return 0
}

// execErr runs a command inside the container (all of its namespaces)
// and returns its combined output.
func (c *container) execErr(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"-t", strconv.Itoa(c.leader), "-a", "env", "-i", containerPath, "HOME=/root", "LANG=C.UTF-8"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	return string(out), err
}

// exec runs a command inside the container and fails the test when it fails.
func (c *container) exec(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := c.execErr(timeout, args...)
	if err != nil {
		c.t.Fatalf("in %s: %s: %v\n%s", c.name, strings.Join(args, " "), err, tail(out, 6000))
	}
	return out
}

// sh runs a shell script inside the container.
func (c *container) sh(timeout time.Duration, script string) string {
	c.t.Helper()
	return c.exec(timeout, "sh", "-c", script)
}

// reboot powers the container off and boots the same root file system again.
func (c *container) reboot() {
	c.t.Helper()
	c.poweroff()
	c.boot()
}

// poweroff asks systemd inside to power off and waits; it kills the
// container when that does not work within 30 s.
func (c *container) poweroff() {
	if c.cmd == nil {
		return
	}
	defer func() { c.cmd, c.leader = nil, 0; c.logf.Close() }()
	select {
	case <-c.done:
		return
	default:
	}
	if c.leader != 0 {
		_, _ = c.execErr(10*time.Second, "systemctl", "poweroff")
	}
	select {
	case <-c.done:
		return
	case <-time.After(30 * time.Second):
	}
	c.t.Logf("%s did not power off in 30s: killing it", c.name)
	if c.leader != 0 {
		_ = syscall.Kill(c.leader, syscall.SIGKILL) // PID 1 of the namespace: takes every process inside with it
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Logf("systemd-nspawn %d still not gone", c.cmd.Process.Pid)
	}
}

// log returns the container's console log so far.
func (c *container) log() string {
	data, _ := os.ReadFile(c.dir + ".log")
	return tail(string(data), 6000)
}

// unmountUnder lazily unmounts whatever is still mounted under dir (in
// the host's mount namespace), deepest first, so removing dir cannot
// reach through a leftover bind mount.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
