package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
)

// sshParams selects the SSH measurement.
type sshParams struct {
	Targets     int
	Concurrency int
	Size        int    // bytes uploaded to each target
	Step        string // shell text of the step run after upload and checksum
	Dir         string // temporary dir: sshd files and one remote dir per target
}

// sshResult is what the SSH comparison measured.
type sshResult struct {
	sshParams
	Measured, Loop time.Duration
	MeasuredWhat   string // what the measured side ran
}

// Speedup is the loop's time over the measured side's.
func (r sshResult) Speedup() float64 { return r.Loop.Seconds() / r.Measured.Seconds() }

// sshTarget is one device: an id and the remote directory its patch
// writes to (all targets share the one sshd on 127.0.0.1).
type sshTarget struct {
	ID  string
	Dir string
}

// patchPlan is the patch both sides apply to every target.
type patchPlan struct {
	Data   []byte
	SHA256 string
	Step   string
}

// file is where the payload goes on target t.
func (t sshTarget) file() string { return filepath.Join(t.Dir, "payload.bin") }

// benchSSH patches p.Targets targets at p.Concurrency with ggfleet's
// patching, then with a sequential scp + ssh loop, and compares.
func benchSSH(ctx context.Context, log *slog.Logger, logf func(string, ...any), p sshParams) (sshResult, error) {
	res := sshResult{sshParams: p}
	if p.Targets < 1 || p.Concurrency < 1 {
		return res, fmt.Errorf("-ssh-targets and -ssh-concurrency must be at least 1")
	}
	for _, bin := range []string{"ssh", "scp"} {
		if _, err := exec.LookPath(bin); err != nil {
			return res, fmt.Errorf("%s not found: install it with `apt-get install -y openssh-client`", bin)
		}
	}
	srvDir := filepath.Join(p.Dir, "sshd")
	if err := os.MkdirAll(srvDir, 0o700); err != nil {
		return res, err
	}
	srv, err := startSSHD(srvDir)
	if err != nil {
		return res, err
	}
	defer srv.stop()

	plan := patchPlan{Data: make([]byte, p.Size), Step: p.Step}
	_, _ = rand.Read(plan.Data)
	sum := sha256.Sum256(plan.Data)
	plan.SHA256 = hex.EncodeToString(sum[:])
	local := filepath.Join(p.Dir, "payload.bin")
	if err := os.WriteFile(local, plan.Data, 0o600); err != nil {
		return res, err
	}
	targets := make([]sshTarget, p.Targets)
	for i := range targets {
		targets[i] = sshTarget{ID: fmt.Sprintf("bench-dev-%02d", i+1), Dir: filepath.Join(p.Dir, "targets", fmt.Sprintf("bench-dev-%02d", i+1))}
	}
	fresh := func() error {
		for _, t := range targets {
			if err := os.RemoveAll(t.Dir); err != nil {
				return err
			}
			if err := os.MkdirAll(t.Dir, 0o755); err != nil {
				return err
			}
			if err := os.Chown(t.Dir, srv.UID, srv.GID); err != nil {
				return err
			}
		}
		return nil
	}

	if err := fresh(); err != nil {
		return res, err
	}
	res.MeasuredWhat = "the agent's patch runner, in-process"
	logf("ssh: patching %d targets (%d bytes + checksum + %q) at concurrency %d with %s", p.Targets, p.Size, p.Step, p.Concurrency, res.MeasuredWhat)
	start := time.Now()
	if err := runWithAgentRunner(ctx, log, srv, targets, plan, p.Concurrency, p.Dir); err != nil {
		return res, err
	}
	res.Measured = time.Since(start)
	if err := verify(targets, plan); err != nil {
		return res, err
	}
	logf("ssh: measured side took %s", res.Measured.Round(time.Millisecond))

	if err := fresh(); err != nil {
		return res, err
	}
	logf("ssh: the same with a sequential scp + ssh loop")
	start = time.Now()
	for _, t := range targets {
		if err := patchWithOpenSSH(ctx, srv, t, local, plan); err != nil {
			return res, err
		}
	}
	res.Loop = time.Since(start)
	if err := verify(targets, plan); err != nil {
		return res, err
	}
	logf("ssh: loop took %s: %.1f× faster", res.Loop.Round(time.Millisecond), res.Speedup())
	return res, nil
}

// patchWithOpenSSH is what an operator's shell loop does for one target:
// scp the file, then ssh to check its sha256 and run the step.
func patchWithOpenSSH(ctx context.Context, srv *sshServer, t sshTarget, local string, plan patchPlan) error {
	scp := exec.CommandContext(ctx, "scp", append(append(srv.openSSHArgs(), "-q", "-P", srv.Port), local, srv.User+"@127.0.0.1:"+t.file())...)
	if out, err := scp.CombinedOutput(); err != nil {
		return fmt.Errorf("scp to %s: %w: %s", t.ID, err, out)
	}
	script := "cd " + patcher.ShellQuote(t.Dir) + " && echo " + plan.SHA256 + "'  payload.bin' | sha256sum -c --quiet && " + plan.Step
	ssh := exec.CommandContext(ctx, "ssh", append(append(srv.openSSHArgs(), "-p", srv.Port, srv.User+"@127.0.0.1"), script)...)
	if out, err := ssh.CombinedOutput(); err != nil {
		return fmt.Errorf("ssh to %s: %w: %s", t.ID, err, out)
	}
	return nil
}

// verify checks every target received the payload intact.
func verify(targets []sshTarget, plan patchPlan) error {
	var errs []error
	for _, t := range targets {
		b, err := os.ReadFile(t.file())
		if err != nil || !bytes.Equal(b, plan.Data) {
			errs = append(errs, fmt.Errorf("target %s: payload missing or different (%d bytes, %v)", t.ID, len(b), err))
		}
	}
	return errors.Join(errs...)
}

func (r sshResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| SSH patch to %d targets (%d bytes + sha256 check + `%s`) | time |\n|---|---|\n", r.Targets, r.Size, r.Step)
	fmt.Fprintf(&b, "| ggfleet (%s), concurrency %d | %s |\n", r.MeasuredWhat, r.Concurrency, r.Measured.Round(time.Millisecond))
	fmt.Fprintf(&b, "| sequential `scp` + `ssh` loop (OpenSSH %s) | %s |\n", openSSHVersion(), r.Loop.Round(time.Millisecond))
	fmt.Fprintf(&b, "| speed-up | **%.1f×** (target ≥ %.0f×) |\n\n", r.Speedup(), targetSSHSpeedup)
	return b.String()
}

func openSSHVersion() string {
	out, _ := exec.Command("ssh", "-V").CombinedOutput()
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), ",")
	return strings.TrimPrefix(v, "OpenSSH_")
}
