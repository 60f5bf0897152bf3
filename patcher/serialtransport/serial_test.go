package serialtransport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/patcher/transporttest"
)

func open(t *testing.T, path, password string) (*Transport, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Open(ctx, Config{Path: path, Login: Login{User: testservers.ConsoleUser, Password: password},
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
}

// tWriter sends log lines to t.Log so they show only for failing tests.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func mustOpen(t *testing.T, path string) *Transport {
	t.Helper()
	tr, err := open(t, path, testservers.ConsolePassword)
	if err != nil {
		t.Fatalf("open console %s: %v", path, err)
	}
	return tr
}

func TestSuite(t *testing.T) {
	for _, shell := range []string{"bash", "dash", "busybox"} {
		t.Run(shell, func(t *testing.T) {
			con := testservers.StartPtyShell(t, shell, true)
			transporttest.Run(t, func(t *testing.T) patcher.Transport {
				return mustOpen(t, con.Path)
			}, transporttest.Options{Drop: con.KillShell})
		})
	}
}

func TestWrongPassword(t *testing.T) {
	con := testservers.StartPtyShell(t, "dash", true)
	_, err := open(t, con.Path, "wrong")
	if !errors.Is(err, patcher.ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
	// The console still works with the right password afterwards.
	mustOpen(t, con.Path).Close()
}

func TestAlreadyAtShellPrompt(t *testing.T) {
	con := testservers.StartPtyShell(t, "bash", false)
	tr := mustOpen(t, con.Path)
	defer tr.Close()
	var out bytes.Buffer
	if _, err := tr.Run(context.Background(), patcher.Command{Script: "echo ok", Stdout: &out, Timeout: 10 * time.Second}); err != nil || out.String() != "ok\n" {
		t.Fatalf("run: %v %q", err, out.String())
	}
}

func TestReloginAfterShellExits(t *testing.T) {
	con := testservers.StartPtyShell(t, "busybox", true)
	tr := mustOpen(t, con.Path)
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Log out behind the transport's back.
	if err := tr.send("exit"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := tr.Run(ctx, patcher.Command{Script: "echo back", Stdout: &out, Timeout: 10 * time.Second})
	if err != nil || res.ExitCode != 0 || out.String() != "back\n" {
		t.Fatalf("run after logout: %v exit %d %q", err, res.ExitCode, out.String())
	}
}

func TestUploadSurvivesShellDeath(t *testing.T) {
	con := testservers.StartPtyShell(t, "dash", true)
	tr := mustOpen(t, con.Path)
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := make([]byte, 20<<10)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), "blob")
	chunks := 0
	tr.afterChunk = func(int) {
		if chunks++; chunks == 5 {
			con.KillShell()
		}
	}
	// Each chunk is acknowledged, so after logging in again the upload goes
	// on from the last acknowledged chunk.
	if err := tr.Upload(ctx, patcher.File{Path: path, Data: bytes.NewReader(data)}); err != nil {
		t.Fatalf("upload across a shell restart: %v", err)
	}
	checkFile(t, path, data)
}

func TestUploadResumesAfterInterruption(t *testing.T) {
	con := testservers.StartPtyShell(t, "busybox", true)
	tr := mustOpen(t, con.Path)
	defer tr.Close()
	data := make([]byte, 20<<10)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), "blob")

	ctx1, cancel1 := context.WithTimeout(context.Background(), 60*time.Second)
	chunks := 0
	tr.afterChunk = func(int) {
		if chunks++; chunks == 5 {
			cancel1()
		}
	}
	err := tr.Upload(ctx1, patcher.File{Path: path, Data: bytes.NewReader(data)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted upload: got %v, want context.Canceled", err)
	}
	tr.afterChunk = nil
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := tr.Upload(ctx, patcher.File{Path: path, Data: bytes.NewReader(data)}); err != nil {
		t.Fatalf("second upload: %v", err)
	}
	if tr.firstChunk == 0 {
		t.Errorf("second upload started from scratch, want resume")
	}
	checkFile(t, path, data)
}

func checkFile(t *testing.T, path string, data []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file differs after upload (%d bytes, %v)", len(got), err)
	}
	left, _ := filepath.Glob(path + ".ggp-*")
	if len(left) > 0 {
		t.Errorf("temporary files left: %s", strings.Join(left, " "))
	}
}

// TestUploadRecoversALostLine: chunk lines are pipelined, so a line lost
// on the wire must never let the next one be appended out of place; the
// device refuses it (its offset differs), and the upload resyncs from
// what the device has and completes intact.
func TestUploadRecoversALostLine(t *testing.T) {
	for _, shell := range []string{"bash", "dash", "busybox"} {
		t.Run(shell, func(t *testing.T) {
			con := testservers.StartPtyShell(t, shell, true)
			tr := mustOpen(t, con.Path)
			defer tr.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			data := make([]byte, 20<<10)
			_, _ = rand.Read(data)
			path := filepath.Join(t.TempDir(), "blob")
			lines, dropped := 0, -1
			tr.chunkLine = func(off int, line string) string {
				if lines++; lines == 4 && dropped < 0 {
					dropped = off
					return ""
				}
				return line
			}
			if err := tr.Upload(ctx, patcher.File{Path: path, Data: bytes.NewReader(data)}); err != nil {
				t.Fatalf("upload with a lost line: %v", err)
			}
			if dropped < 0 {
				t.Fatal("no line was dropped: the upload was too small for the test")
			}
			checkFile(t, path, data)
		})
	}
}
