package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unit is a parsed systemd unit: section → key → values (in order).
type unit map[string]map[string][]string

// parseUnit is a strict-enough INI reader for unit files: comments,
// [Section] headers, Key=Value lines; anything else is an error.
func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if _, dup := u[section]; dup {
				t.Fatalf("line %d: section [%s] twice", n, section)
			}
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || k == "" || strings.ContainsAny(k, " \t") {
				t.Fatalf("line %d: not a Key=Value line in a section: %q", n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) want(t *testing.T, section, key, value string) {
	t.Helper()
	if got := u[section][key]; !slices.Contains(got, value) {
		t.Errorf("[%s] %s = %q, want %q", section, key, got, value)
	}
}

func TestRenderAgentUnit(t *testing.T) {
	text, err := RenderAgentUnit("/opt/gg agent/ggagent", []string{"run", "--state-dir", "/var/lib/ggagent", "--runtime", `sim"ulated`})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "{{") {
		t.Fatalf("template actions left in the rendered unit:\n%s", text)
	}
	u := parseUnit(t, text)
	u.want(t, "Service", "ExecStart", `/opt/gg\x20agent/ggagent "run" "--state-dir" "/var/lib/ggagent" "--runtime" "sim\"ulated" $GGAGENT_ARGS`)
	for _, d := range []struct{ section, key, value string }{
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Unit", "StartLimitIntervalSec", "300"},
		{"Unit", "StartLimitBurst", "10"},
		{"Service", "Type", "simple"},
		{"Service", "EnvironmentFile", "-" + AgentDefaultsPath},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartSec", "5"},
		{"Service", "StateDirectory", "ggagent"},
		{"Service", "StateDirectoryMode", "0700"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "full"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		u.want(t, d.section, d.key, d.value)
	}
	// What the agent must keep: devices for serial ports, W^X pages for the JVM.
	for _, k := range []string{"PrivateDevices", "MemoryDenyWriteExecute", "ProtectClock", "DevicePolicy", "DeviceAllow", "User", "DynamicUser"} {
		if v, ok := u["Service"][k]; ok {
			t.Errorf("[Service] %s=%q would stop the agent from managing the nucleus or serial devices", k, v)
		}
	}
	if _, err := RenderAgentUnit("ggagent", nil); err == nil {
		t.Error("RenderAgentUnit accepted a relative path")
	}
}

func TestFleetUnit(t *testing.T) {
	u := parseUnit(t, FleetUnit)
	for _, d := range []struct{ section, key, value string }{
		{"Unit", "After", "network-online.target"},
		{"Service", "ExecStart", "/usr/bin/ggfleet serve --data-dir /var/lib/ggfleet $GGFLEET_ARGS"},
		{"Service", "EnvironmentFile", "-" + FleetDefaultsPath},
		{"Service", "Restart", "on-failure"},
		{"Service", "StateDirectory", "ggfleet"},
		{"Service", "StateDirectoryMode", "0700"},
		{"Service", "DynamicUser", "yes"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		u.want(t, d.section, d.key, d.value)
	}
	if strings.Contains(FleetUnit, "{{") {
		t.Error("ggfleet.service is installed as it is and must hold no template action")
	}
}

func TestDefaultsFiles(t *testing.T) {
	for name, text := range map[string]string{"ggagent.default": AgentDefaults, "ggfleet.default": FleetDefaults} {
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if k, _, ok := strings.Cut(line, "="); !ok || strings.ContainsAny(k, " \t") {
				t.Errorf("%s: %q is not an environment assignment", name, line)
			}
		}
	}
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on both units
// (rendered for a program that exists here) when the tool is installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not installed: .ci/run must install systemd")
		}
		t.Skip("systemd-analyze not installed (apt-get install systemd): cannot verify the units")
	}
	dir := t.TempDir()
	prog := filepath.Join(dir, "bin", "prog")
	if err := os.MkdirAll(filepath.Dir(prog), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	agent, err := RenderAgentUnit(prog, DefaultAgentArguments())
	if err != nil {
		t.Fatal(err)
	}
	fleet := strings.Replace(FleetUnit, "/usr/bin/ggfleet", prog, 1)
	for name, text := range map[string]string{AgentUnitName: agent, FleetUnitName: fleet} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), tool, "verify", "--man=no", path).CombinedOutput()
		// verify exits 0 on unknown keys and bad values, only warning about
		// them: any line naming our file is a failure.
		if err != nil || strings.Contains(string(out), path) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		} else if len(out) > 0 {
			t.Logf("systemd-analyze verify %s (about other units):\n%s", name, out)
		}
	}
}
