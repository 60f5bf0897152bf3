// Package patcher runs patch steps on a client device that has no agent of
// its own: the ggagent on a Greengrass core reaches the device over SSH or a
// serial console and drives its POSIX shell. Both ways of reaching a device
// sit behind the small Transport interface so the patch runner does not care
// which one a target uses; the typed errors tell it whether to retry, fail
// the step, or reconnect.
package patcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Transport is one logged-in connection to a client device. Run and Upload
// are not safe for concurrent use: a serial console is one shell, so the
// runner serialises work per device anyway.
type Transport interface {
	// Run executes cmd.Script with the device's /bin/sh and waits for it.
	// A non-zero exit code is not an error: it is reported in Result. The
	// error is ErrTimeout when cmd.Timeout passed (the remote process group
	// has then been killed), ErrConnLost when the link or shell went away,
	// or ctx.Err() when ctx ended first.
	Run(ctx context.Context, cmd Command) (Result, error)
	// Upload writes f.Data to f.Path atomically (temporary name, checksum
	// verified on the device, then rename) with mode f.Mode. The parent
	// directory must exist.
	Upload(ctx context.Context, f File) error
	// Close ends the session and releases the connection.
	Close() error
}

// Command is one shell script to run on the device.
type Command struct {
	// Script is shell text run by /bin/sh; it may be any length and contain
	// any quoting: transports never paste it into a command line unquoted.
	Script string
	// Env adds environment variables for the script.
	Env map[string]string
	// Dir is the working directory; empty means the login directory.
	Dir string
	// Become runs the script as root (sudo when the login user is not root).
	Become bool
	// Timeout bounds the run; zero means only ctx bounds it.
	Timeout time.Duration
	// Stdout and Stderr receive the script's output; nil discards it. Over a
	// serial console stderr arrives after the script has finished.
	Stdout, Stderr io.Writer
}

// Result is the outcome of a finished Run.
type Result struct {
	ExitCode int
	Duration time.Duration
}

// File is one file to place on the device.
type File struct {
	// Path is the absolute destination path.
	Path string
	// Mode is the permission bits the file gets; zero means 0644.
	Mode os.FileMode
	// Data is read to EOF; Size is its length when known (-1 or 0 if not).
	Data io.Reader
	Size int64
	// SHA256 is the expected lowercase hex digest; when empty it is
	// computed from Data. A mismatch on the device gives ErrChecksum.
	SHA256 string
}

// Errors the runner tells apart. Transports wrap them with details, so test
// with errors.Is.
var (
	// ErrAuth: the device refused the credentials (SSH auth or console
	// login). Retrying with the same credentials will not help.
	ErrAuth = errors.New("authentication failed")
	// ErrHostKeyMismatch: the SSH host key differs from the pinned or
	// recorded one. Never accepted automatically: the device may have been
	// replaced or the connection intercepted.
	ErrHostKeyMismatch = errors.New("ssh host key mismatch")
	// ErrTimeout: the command ran past its timeout and was killed.
	ErrTimeout = errors.New("command timed out")
	// ErrConnLost: the connection or the device's shell went away; the
	// outcome of the command in flight is unknown. Reconnecting may help.
	ErrConnLost = errors.New("connection to device lost")
	// ErrChecksum: an uploaded file did not arrive intact.
	ErrChecksum = errors.New("checksum mismatch after upload")
)

// ShellQuote quotes s for a POSIX shell as one word.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ScriptPrelude returns the shell lines that apply cmd.Dir and cmd.Env
// before cmd.Script; transports prepend it so quoting is done in one place.
// Env keys must be shell identifiers; they are sorted so the text is
// deterministic.
func ScriptPrelude(cmd Command) (string, error) {
	var b strings.Builder
	if cmd.Dir != "" {
		b.WriteString("cd " + ShellQuote(cmd.Dir) + " || exit 1\n")
	}
	keys := make([]string, 0, len(cmd.Env))
	for k := range cmd.Env {
		if !validName(k) {
			return "", fmt.Errorf("environment variable name %q is not a shell identifier (letters, digits, _; not starting with a digit)", k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString("export " + k + "=" + ShellQuote(cmd.Env[k]) + "\n")
	}
	return b.String(), nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
