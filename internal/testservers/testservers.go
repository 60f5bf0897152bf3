// Package testservers starts real servers for tests: an OpenSSH sshd on
// 127.0.0.1 with its own config and keys, and a real shell behind a pair of
// pseudo-terminals with a small getty-like login in front, reachable like a
// serial console. Tests run against real programs so behaviour of real
// devices (tty line discipline, sshd session handling) is what gets tested.
//
// When a needed program is missing the test is skipped with the apt package
// to install, but only outside CI: with the CI environment variable set it
// fails, because CI must install it (.ci/run).
package testservers

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// need returns the path of program bin, or skips (outside CI) or fails (in
// CI) the test saying which apt package provides it.
func need(t testing.TB, bin, aptPackage string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s not found: install it with `apt-get install -y %s` to run this test", bin, aptPackage)
	}
	t.Fatalf("%s not found but CI is set: .ci/run must `apt-get install -y %s`", bin, aptPackage)
	return ""
}

// needRoot skips (outside CI) or fails (in CI) a test that must run as root.
func needRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("needs root: %s", why)
	}
	t.Fatalf("needs root in CI: %s", why)
}

// sessionMembers lists the processes whose session id is sid, read from
// /proc/<pid>/stat.
func sessionMembers(sid int) []int {
	return procsWhere(func(_, _, session int) bool { return session == sid })
}

// children lists the processes whose parent is ppid.
func children(ppid int) []int {
	return procsWhere(func(_, parent, _ int) bool { return parent == ppid })
}

func procsWhere(match func(pid, ppid, sid int) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name is in parentheses and may contain spaces; the
		// fields we need follow the last ')': state ppid pgrp session.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 4 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		sid, _ := strconv.Atoi(f[3])
		if match(pid, ppid, sid) {
			out = append(out, pid)
		}
	}
	return out
}

// killSession sends SIGKILL to every process in session sid.
func killSession(sid int) {
	for _, pid := range sessionMembers(sid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// ProcessesRunning reports the pids of live processes whose command line
// is exactly argv (e.g. "sleep", "4711"). Tests use it to prove a timed-out
// command left nothing behind.
func ProcessesRunning(argv ...string) []int {
	want := strings.Join(argv, "\x00")
	return procsWhere(func(pid, _, _ int) bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			return false
		}
		return strings.TrimRight(string(b), "\x00") == want
	})
}
