package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity/identitytest"
	"github.com/ggfleet/ggfleet/agent/statedir"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(ctx, args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestVersionAndHelp(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, 0, "ggagent dev"},
		{[]string{"--version"}, 0, "ggagent dev"},
		{[]string{"help"}, 0, "ggagent enroll --broker URL"},
		{[]string{}, 2, "Usage:"},
		{[]string{"install"}, 2, "--nucleus-zip is required"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"enroll", "--help"}, 0, "--key-algorithm"},
		{[]string{"run", "--help"}, 0, "--health-interval"},
		{[]string{"status", "-h"}, 0, "--state-dir"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, t.Context(), tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.want) {
				t.Fatalf("code %d (want %d), output %q, want %q", r.code, tc.code, r.stdout+r.stderr, tc.want)
			}
		})
	}
}

func TestEnrollAndStatus(t *testing.T) {
	b := identitytest.NewBroker(t, false)
	dir := filepath.Join(t.TempDir(), "state")
	tok := b.Token("core-1")
	args := []string{"enroll", "--broker", b.URL(), "--core", "core-1", "--token", tok, "--state-dir", dir}

	r := runCLI(t, t.Context(), args...)
	if r.code != 0 {
		t.Fatalf("enroll: code %d, stderr %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, `Enrolled core "core-1" with `+b.URL()) || !strings.Contains(r.stdout, "expires at") ||
		!strings.Contains(r.stdout, "Next: ggagent run --state-dir "+dir) {
		t.Fatalf("enroll output:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "warning: the broker URL is plain http://") {
		t.Fatalf("no http warning: %q", r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, tok) {
		t.Fatal("the token was printed")
	}

	r = runCLI(t, t.Context(), args...)
	if r.code != 0 || !strings.Contains(r.stdout, "Already enrolled as core \"core-1\"") || !strings.Contains(r.stdout, "no token was spent") {
		t.Fatalf("re-run: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b.Calls() != 1 {
		t.Fatalf("the broker was called %d times", b.Calls())
	}

	r = runCLI(t, t.Context(), "status", "--state-dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, `Enrolled as core "core-1"`) || !strings.Contains(r.stdout, "client id core-1") ||
		!strings.Contains(r.stdout, "Agent: no status yet") {
		t.Fatalf("status: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	d, err := statedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteJSON(statedir.StatusFile, map[string]any{"connection": "ONLINE", "lastReportAt": "2026-12-01T10:00:00Z", "components": 3}); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, t.Context(), "status", "--state-dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "connection:      ONLINE") || !strings.Contains(r.stdout, "lastReportAt:") ||
		!strings.Contains(r.stdout, "components:      3") {
		t.Fatalf("status with status.json:\n%s%s", r.stdout, r.stderr)
	}

	r = runCLI(t, t.Context(), "status", "--state-dir", dir, "--format", "json")
	var rep struct {
		Identity struct {
			ThingName string `json:"thingName"`
		} `json:"identity"`
		ClientID            string         `json:"clientId"`
		CertificateNotAfter time.Time      `json:"certificateNotAfter"`
		Agent               map[string]any `json:"agent"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
		t.Fatalf("status json: %v, code %d\n%s", err, r.code, r.stdout)
	}
	if rep.Identity.ThingName != "core-1" || rep.ClientID != "core-1" || rep.CertificateNotAfter.IsZero() || rep.Agent["connection"] != "ONLINE" {
		t.Fatalf("status json: %+v", rep)
	}
}

func TestEnrollFromEnvironment(t *testing.T) {
	b := identitytest.NewBroker(t, true)
	dir := filepath.Join(t.TempDir(), "state")
	t.Setenv("GGAGENT_BROKER", b.URL())
	t.Setenv("GGAGENT_CORE", "core-env")
	t.Setenv("GGAGENT_TOKEN", b.Token("core-env"))
	t.Setenv("GGAGENT_CA_SHA256", b.CA.SHA256())
	t.Setenv("GGAGENT_KEY_ALGORITHM", "RSA-2048")
	t.Setenv("GGAGENT_STATE_DIR", filepath.Join(t.TempDir(), "ignored"))
	// The flag wins over its environment twin.
	r := runCLI(t, t.Context(), "enroll", "--state-dir", dir)
	if r.code != 0 {
		t.Fatalf("code %d: %s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "warning") {
		t.Fatalf("unexpected warning for https: %s", r.stderr)
	}
	d, err := statedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := d.ReadFile(statedir.KeyFile)
	if err != nil || !strings.Contains(string(key), "PRIVATE KEY") {
		t.Fatalf("no key in the flag's state dir: %v", err)
	}
}

func TestEnrollFailures(t *testing.T) {
	b := identitytest.NewBroker(t, true)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing flags", []string{"--core", "c"}, 2, "--broker, --token are required"},
		{"bad core", []string{"--broker", b.URL(), "--core", "a:b", "--token", "t"}, 2, "not a valid core name"},
		{"bad algorithm", []string{"--broker", b.URL(), "--core", "c", "--token", "t", "--key-algorithm", "DSA"}, 2, "--key-algorithm"},
		{"unknown flag", []string{"--nope"}, 2, "unknown flag: --nope"},
		{"extra argument", []string{"--broker", b.URL(), "--core", "c", "--token", "t", "extra"}, 2, `unexpected argument "extra"`},
		{"used token", []string{"--broker", b.URL(), "--core", "c", "--token", "gge_used", "--ca-sha256", b.CA.SHA256()}, 1, "enrollment token is not valid: make a new one"},
		{"wrong pin", []string{"--broker", b.URL(), "--core", "c", "--token", "t", "--ca-sha256", strings.Repeat("ab", 32)}, 1, "not signed by the pinned CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			r := runCLI(t, t.Context(), append([]string{"enroll", "--state-dir", dir}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("code %d (want %d), stderr %q, want %q", r.code, tc.code, r.stderr, tc.want)
			}
			if r := runCLI(t, t.Context(), "status", "--state-dir", dir); r.code != 1 || !strings.Contains(r.stderr, "not enrolled: ") {
				t.Fatalf("status after a failed enroll: code %d, %s", r.code, r.stderr)
			}
		})
	}
}

func TestRun(t *testing.T) {
	t.Cleanup(func() { RunAgent = nil })
	dir := t.TempDir()

	RunAgent = nil
	if r := runCLI(t, t.Context(), "run", "--state-dir", dir); r.code != 1 || !strings.Contains(r.stderr, "cannot run the agent") {
		t.Fatalf("nil hook: code %d, %s", r.code, r.stderr)
	}

	var got RunConfig
	RunAgent = func(ctx context.Context, cfg RunConfig) error {
		got = cfg
		return nil
	}
	t.Setenv("GGAGENT_HEALTH_INTERVAL", "10s")
	t.Setenv("GGAGENT_RUNTIME", "greengrass")
	r := runCLI(t, t.Context(), "run", "--state-dir", dir, "--runtime", "simulated", "--log-format", "json")
	if r.code != 0 {
		t.Fatalf("code %d: %s", r.code, r.stderr)
	}
	if got.StateDir != dir || got.Runtime != RuntimeSimulated || got.HealthInterval != 10*time.Second ||
		got.LogLevel != "info" || got.LogFormat != "json" || got.Logger == nil {
		t.Fatalf("config %+v", got)
	}

	tests := []struct {
		name string
		args []string
		hook func(context.Context, RunConfig) error
		code int
		want string
	}{
		{"bad runtime", []string{"--runtime", "docker"}, nil, 2, `--runtime "docker"`},
		{"bad interval", []string{"--health-interval", "10ms"}, nil, 2, "--health-interval 10ms"},
		{"bad duration", []string{"--health-interval", "soon"}, nil, 2, "invalid argument"},
		{"bad log level", []string{"--log-level", "loud"}, nil, 2, "--log-level"},
		{"agent fails", nil, func(context.Context, RunConfig) error { return errors.New("mqtt refused") }, 1, "ggagent run: mqtt refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			RunAgent = tc.hook
			if RunAgent == nil {
				RunAgent = func(context.Context, RunConfig) error { t.Error("the agent ran"); return nil }
			}
			r := runCLI(t, t.Context(), append([]string{"run", "--state-dir", dir}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("code %d (want %d), stderr %q, want %q", r.code, tc.code, r.stderr, tc.want)
			}
		})
	}

	// A signal ends the agent with the context's error: that is a clean exit.
	ctx, cancel := context.WithCancel(t.Context())
	RunAgent = func(ctx context.Context, cfg RunConfig) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	if r := runCLI(t, ctx, "run", "--state-dir", dir); r.code != 0 {
		t.Fatalf("shutdown: code %d, %s", r.code, r.stderr)
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		notAfter time.Time
		want     string
	}{
		{now.Add(400 * 24 * time.Hour), "(in 400 days)"},
		{now.Add(90 * time.Minute), "(in 1h30m0s)"},
		{now.Add(-time.Hour), "EXPIRED at 2026-11-30T23:00:00Z"},
		{time.Time{}, "unknown expiry"},
	}
	for _, tc := range tests {
		if got := expiry(tc.notAfter, now); !strings.Contains(got, tc.want) {
			t.Errorf("expiry(%v) = %q, want %q", tc.notAfter, got, tc.want)
		}
	}
}
