// Package e2e holds the behaviour tests: they build the real ggfleet binary
// and drive it over real HTTP, as operators and devices would.
package e2e

import (
	"bytes"
	"context"

	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once for the whole run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ggfleet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for name, pkg := range map[string]string{
		"ggfleet": "github.com/ggfleet/ggfleet/broker/cmd/ggfleet",
		"ggagent": "github.com/ggfleet/ggfleet/agent/cmd/ggagent",
	} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build "+name+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a 127.0.0.1 address with a port that was free just now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// broker is one running `ggfleet serve` process.
type broker struct {
	t       testing.TB
	dataDir string
	listen  string
	mqtt    string
	args    []string
	cmd     *exec.Cmd
	out     *bytes.Buffer // stdout (the banner)
	logPath string
	url     string
	token   string
	client  *http.Client
}

// startBroker starts ggfleet serve on fresh ports with a fresh data dir.
func startBroker(t testing.TB, extra ...string) *broker {
	t.Helper()
	b := &broker{t: t, dataDir: t.TempDir(), listen: freeAddr(t), mqtt: freeAddr(t), args: extra,
		client: &http.Client{Timeout: 30 * time.Second}}
	b.url = "http://" + b.listen
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	t := b.t
	t.Helper()
	args := append([]string{"serve", "--data-dir", b.dataDir, "--listen", b.listen, "--mqtt-listen", b.mqtt, "--log-format", "json", "--log-level", "debug"}, b.args...)
	cmd := exec.Command(filepath.Join(binDir, "ggfleet"), args...)
	b.out = &bytes.Buffer{}
	cmd.Stdout = b.out
	b.logPath = filepath.Join(b.dataDir, fmt.Sprintf("broker-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.cmd = cmd
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("ggfleet serve exited early; log:\n%s", b.log())
		default:
		}
		resp, err := b.client.Get(b.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not ready after 60s; log:\n%s", b.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("read admin token: %v", err)
	}
	b.token = strings.TrimSpace(string(tok))
}

// log returns the broker's log so far.
func (b *broker) log() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

// kill sends SIGKILL and waits for the process to go.
func (b *broker) kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	b.waitGone()
}

// stop asks the broker to shut down (SIGTERM) and waits.
func (b *broker) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	b.waitGone()
}

func (b *broker) waitGone() {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := b.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			break
		}
		// A reaped process answers ESRCH; an unreaped zombie still answers nil.
		if b.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.cmd = nil
}

// restart starts the broker again on the same data dir and ports.
func (b *broker) restart() {
	b.t.Helper()
	b.start()
}

// response is an HTTP response read whole.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Message returns the {"message"} of an error body.
func (r response) Message() string {
	var m struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(r.Body, &m)
	return m.Message
}

// do sends a request with the admin token; body may be nil, a string, []byte or a value to encode.
func (b *broker) do(method, path string, body any) response {
	return b.doWith(method, path, body, map[string]string{"Authorization": "Bearer " + b.token})
}

// doWith sends a request with exactly the given extra headers (no token unless given).
func (b *broker) doWith(method, path string, body any, headers map[string]string) response {
	t := b.t
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, b.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/vnd.aws-cdf-v1.0+json")
	}
	req.Header.Set("Accept", "application/vnd.aws-cdf-v1.0+json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// must fails the test unless the response has the wanted status.
func (b *broker) must(want int, method, path string, body any) response {
	b.t.Helper()
	r := b.do(method, path, body)
	if r.Status != want {
		b.t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// waitFor polls cond until it returns true or the generous deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitEvery(t, timeout, 200*time.Millisecond, what, cond)
}

// waitEvery is waitFor checking cond every interval.
func waitEvery(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// waitTask polls a task until it is Success or Failure and returns it.
func (b *broker) waitTask(path string, timeout time.Duration) map[string]any {
	b.t.Helper()
	var task map[string]any
	waitFor(b.t, timeout, "task "+path+" to finish", func() bool {
		r := b.must(200, "GET", path, nil)
		task = map[string]any{}
		r.JSON(b.t, &task)
		s := task["taskStatus"]
		if s != "Success" && s != "Failure" {
			return false
		}
		// Failure is sticky and set by the first failed batch (CDF), so a
		// Failure task may still have batches running: wait for them too.
		if total, ok := task["batchesTotal"]; ok && task["batchesComplete"] != total {
			return false
		}
		for _, key := range []string{"cores", "devices", "deployments"} {
			items, _ := task[key].([]any)
			for _, it := range items {
				m, _ := it.(map[string]any)
				if st := m["taskStatus"]; st == "Waiting" || st == "InProgress" {
					return false
				}
			}
		}
		return true
	})
	return task
}
