package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Commander runs the host programs the installer needs (java, useradd,
// groupadd, getent, systemctl). Production uses ExecCommander; tests put
// stand-in programs first in PATH, so the same code path runs.
type Commander interface {
	// Run runs name with args and returns its combined stdout and stderr.
	// A non-zero exit is an error that wraps *exec.ExitError; a program
	// that is not installed gives an error wrapping exec.ErrNotFound.
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecCommander runs programs with os/exec, found through PATH.
type ExecCommander struct{}

// Run implements Commander.
func (ExecCommander) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w%s", name, err, tail(out.Bytes()))
	}
	return out.Bytes(), nil
}

// exitCode is the exit status of a finished command, or -1 when it did not
// run to an exit (not found, killed).
func exitCode(err error) int {
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode()
	}
	return -1
}

// tail is the last lines of a command's output, for error messages.
func tail(out []byte) string {
	s := strings.TrimSpace(string(out))
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\n  " + strings.Join(lines, "\n  ")
}
