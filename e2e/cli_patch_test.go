package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestCLIPatch drives device patching with `ggfleet patch` against the real
// broker, an enrolled ggagent and a real sshd (the patch journey's set-up).
func TestCLIPatch(t *testing.T) {
	e := startPatchEnv(t)
	b := e.b
	dir := t.TempDir()
	tmplFile := filepath.Join(dir, "cli-install.yaml")
	if err := os.WriteFile(tmplFile, []byte(`name: cli-install
patchType: agentless
description: one file, two steps
extraVars:
  greeting: hello
files:
  - path: "{{ .Vars.out_dir }}/greeting.txt"
    mode: "0644"
    template: true
    source:
      inline: Z3JlZXRpbmc9e3sgLlZhcnMuZ3JlZXRpbmcgfX0K
steps:
  - name: install
    run: cp "$PATCH_VAR_OUT_DIR/greeting.txt" "$PATCH_VAR_OUT_DIR/installed.txt" && echo installed
    timeoutSeconds: 60
  - name: verify
    run: cat "$PATCH_VAR_OUT_DIR/installed.txt"
    timeoutSeconds: 60
`), 0o600); err != nil {
		t.Fatal(err)
	}
	failFile := filepath.Join(dir, "cli-fail.yaml")
	if err := os.WriteFile(failFile, []byte("name: cli-fail\nsteps:\n  - name: boom\n    run: echo going down >&2; exit 3\n    timeoutSeconds: 30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.sshd.HostKey)))
	out := deviceDir(t)

	t.Run("templates", func(t *testing.T) {
		b.cli("patch", "templates", "create", "-f", tmplFile).wantCode(t, 0)
		b.cli("patch", "templates", "create", "-f", failFile).wantCode(t, 0)
		b.cli("patch", "templates", "create", "-f", failFile).wantCode(t, 1)
		cliGolden(t, "patch_templates_list.txt", b.cli("patch", "templates", "list").wantCode(t, 0).stdout)
		cliGolden(t, "patch_templates_show.txt", b.cli("patch", "templates", "show", "cli-install").wantCode(t, 0).stdout)
		upd := filepath.Join(dir, "upd.yaml")
		if err := os.WriteFile(upd, []byte("description: two steps, version 2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if r := b.cli("patch", "templates", "update", "cli-install", "-f", upd).wantCode(t, 0); !strings.Contains(r.stdout, "Version:      2") {
			t.Errorf("update:\n%s", r.stdout)
		}
		if r := b.cli("patch", "templates", "show", "cli-install", "--version", "1").wantCode(t, 0); !strings.Contains(r.stdout, "one file, two steps") {
			t.Errorf("show --version 1:\n%s", r.stdout)
		}
		b.cli("patch", "templates", "show", "nope").wantCode(t, 1)
		b.cli("patch", "templates", "frobnicate").wantCode(t, 2)
	})

	t.Run("targets", func(t *testing.T) {
		b.cli("patch", "targets", "set", "cli-dev", "--core", patchCore, "--ssh", "root@"+e.sshd.Addr,
			"--credential-ref", "core:ssh-root-key", "--host-key", hostKey).wantCode(t, 0)
		r := b.cli("patch", "targets", "probe", "cli-dev").wantCode(t, 0)
		if !strings.Contains(r.stdout, "OK:") || !strings.Contains(r.stdout, ssh.FingerprintSHA256(e.sshd.HostKey)) {
			t.Errorf("probe:\n%s", r.stdout)
		}
		if r := b.cli("patch", "targets", "list", "--core", patchCore).wantCode(t, 0); !strings.Contains(r.stdout, "cli-dev") || !strings.Contains(r.stdout, "root@"+e.sshd.Addr) {
			t.Errorf("targets list:\n%s", r.stdout)
		}
		b.cli("patch", "targets", "set", "bad-dev", "--core", patchCore, "--ssh", "root@"+e.sshd.Addr).wantCode(t, 2)
		b.cli("patch", "targets", "set", "gone-dev", "--core", patchCore, "--ssh", "root@"+e.sshd.Addr, "--credential-ref", "core:x").wantCode(t, 0)
		b.cli("patch", "targets", "delete", "gone-dev").wantCode(t, 0)
		b.cli("patch", "targets", "show", "gone-dev").wantCode(t, 1)
	})

	var failedPatch string
	t.Run("run", func(t *testing.T) {
		r := b.cli("patch", "run", "--template", "cli-install", "--device", "cli-dev", "--var", "out_dir="+out).wantCode(t, 0)
		if !strings.Contains(r.stdout, "Success 1, Failure 0, InProgress 0") {
			t.Errorf("patch run:\n%s", r.stdout)
		}
		if got, err := os.ReadFile(filepath.Join(out, "installed.txt")); err != nil || string(got) != "greeting=hello\n" {
			t.Errorf("installed.txt = %q %v", got, err)
		}
		r = b.cli("patch", "run", "--template", "cli-fail", "--device", "cli-dev", "-o", "json").wantCode(t, 1)
		var doc struct {
			Task struct {
				TaskID string `json:"taskId"`
				Status string `json:"status"`
			} `json:"task"`
			Patches []struct {
				PatchID       string `json:"patchId"`
				PatchStatus   string `json:"patchStatus"`
				StatusMessage string `json:"statusMessage"`
			} `json:"patches"`
		}
		decodeCLI(t, r.stdout, &doc)
		if doc.Task.Status != "failed" || len(doc.Patches) != 1 || doc.Patches[0].PatchStatus != "failed" || doc.Patches[0].StatusMessage == "" {
			t.Fatalf("failed patch task: %+v", doc)
		}
		failedPatch = doc.Patches[0].PatchID
		if r := b.cli("tasks", "show", doc.Task.TaskID).wantCode(t, 1); !strings.Contains(r.stdout, "Failures:\n  cli-dev: "+doc.Patches[0].StatusMessage) {
			t.Errorf("tasks show of the failed patch task:\n%s", r.stdout)
		}
	})

	t.Run("show, logs, retry", func(t *testing.T) {
		if failedPatch == "" {
			t.Skip("no failed patch")
		}
		r := b.cli("patch", "show", failedPatch).wantCode(t, 0)
		if !strings.Contains(r.stdout, "boom") || !strings.Contains(r.stdout, "failed") {
			t.Errorf("patch show:\n%s", r.stdout)
		}
		if r := b.cli("patch", "logs", failedPatch, "--step", "boom", "--stream", "stderr").wantCode(t, 0); !strings.Contains(r.stdout, "going down") {
			t.Errorf("patch logs:\n%s", r.stdout)
		}
		b.cli("patch", "retry", failedPatch).wantCode(t, 0)
		var attempt struct {
			Attempt int `json:"attempt"`
		}
		waitFor(t, 2*time.Minute, "the retried patch to run again", func() bool {
			decodeCLI(t, b.cli("patch", "show", failedPatch, "-o", "json").wantCode(t, 0).stdout, &attempt)
			return attempt.Attempt == 2
		})
		b.cli("patch", "show", "no-such-patch").wantCode(t, 1)
	})
}
