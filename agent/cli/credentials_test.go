package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentials(t *testing.T) {
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "state")
	secret := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(secret, []byte("-----BEGIN KEY-----\nabc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	credentialsStdin = strings.NewReader("pw-from-stdin\n")
	t.Cleanup(func() { credentialsStdin = os.Stdin })

	steps := []struct {
		args     []string
		code     int
		stdout   string // substring
		stderr   string // substring
		validate func(t *testing.T)
	}{
		{args: []string{"set", "plc-07-key", "--from-file", secret, "--state-dir", state}, stdout: "core:plc-07-key",
			validate: func(t *testing.T) {
				dir, _ := os.Stat(filepath.Join(state, "credentials"))
				f, err := os.Stat(filepath.Join(state, "credentials", "plc-07-key"))
				if err != nil || f.Mode().Perm() != 0o600 || dir.Mode().Perm() != 0o700 {
					t.Errorf("modes: file %v dir %v (%v), want 0600 and 0700", f.Mode(), dir.Mode(), err)
				}
			}},
		{args: []string{"set", "--state-dir", state, "sensor.pw", "--from-file", "-"}, stdout: "stored"},
		{args: []string{"list", "--state-dir", state}, stdout: "plc-07-key\nsensor.pw\n",
			validate: func(t *testing.T) {
				b, _ := os.ReadFile(filepath.Join(state, "credentials", "sensor.pw"))
				if string(b) != "pw-from-stdin\n" {
					t.Errorf("stdin secret stored as %q", b)
				}
			}},
		{args: []string{"set", "../escape", "--from-file", secret, "--state-dir", state}, code: ExitFailure, stderr: "must be 1-64 letters"},
		{args: []string{"set", "x", "--state-dir", state}, code: ExitUsage, stderr: "--from-file is required"},
		{args: []string{"set", "x", "--from-file", filepath.Join(state, "nope"), "--state-dir", state}, code: ExitFailure, stderr: "read the secret"},
		{args: []string{"delete", "plc-07-key", "--state-dir", state}, stdout: "deleted"},
		{args: []string{"delete", "plc-07-key", "--state-dir", state}, code: ExitFailure, stderr: "not found"},
		{args: []string{"list", "--state-dir", state}, stdout: "sensor.pw\n"},
		{args: []string{"list", "extra", "--state-dir", state}, code: ExitUsage, stderr: "takes no arguments"},
		{args: []string{"rotate"}, code: ExitUsage, stderr: "unknown action"},
	}
	for _, s := range steps {
		r := runCLI(t, ctx, append([]string{"credentials"}, s.args...)...)
		if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Errorf("credentials %v: code %d stdout %q stderr %q; want %d, %q, %q", s.args, r.code, r.stdout, r.stderr, s.code, s.stdout, s.stderr)
		}
		if s.validate != nil {
			s.validate(t)
		}
		if strings.Contains(r.stdout+r.stderr, "abc") || strings.Contains(r.stdout+r.stderr, "pw-from-stdin") {
			t.Errorf("credentials %v printed a secret", s.args)
		}
	}
}
