package e2e

import (
	"encoding/base64"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"golang.org/x/crypto/ssh"
)

// patchCore is the core whose agent reaches the client devices.
const patchCore = "patch-core"

// patchEnv is a broker, one enrolled ggagent and the client devices it
// patches: a real sshd on 127.0.0.1 (two device ids, one remote dir each)
// and a real shell behind a pseudo-terminal with a getty-like login.
type patchEnv struct {
	t        *testing.T
	b        *broker
	a        *agentProc
	stateDir string
	sshd     *testservers.SSHD
	console  *testservers.PtyShell
	// dirs maps a device id to the directory its patches write to.
	dirs map[string]string
}

// patchObj is the part of a patch object the tests look at.
type patchObj struct {
	PatchID       string            `json:"patchId"`
	DeviceID      string            `json:"deviceId"`
	PatchStatus   string            `json:"patchStatus"`
	StatusMessage string            `json:"statusMessage"`
	CoreName      string            `json:"coreName"`
	Attempt       int               `json:"attempt"`
	ExtraVars     map[string]string `json:"extraVars"`
	Logs          *struct {
		Available bool  `json:"available"`
		Bytes     int64 `json:"bytes"`
	} `json:"logs"`
}

func (p patchObj) final() bool { return p.PatchStatus == "success" || p.PatchStatus == "failed" }

// stepObj is one entry of GET /patches/{id}/steps.
type stepObj struct {
	Index      int    `json:"index"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	ExitCode   *int   `json:"exitCode"`
	Attempts   int    `json:"attempts"`
	StdoutTail string `json:"stdoutTail"`
	StderrTail string `json:"stderrTail"`
	Error      string `json:"error"`
}

// startPatchEnv starts everything and stores the targets' secrets on the
// core with `ggagent credentials set`, as an operator would.
func startPatchEnv(t *testing.T) *patchEnv {
	t.Helper()
	e := &patchEnv{t: t, dirs: map[string]string{}}
	e.sshd = testservers.StartSSHD(t, testservers.SSHDOptions{})
	e.console = testservers.StartPtyShell(t, "dash", true)
	e.b = startBroker(t)
	logBrokerOnFailure(t, e.b)
	e.b.readyCore(patchCore)
	e.stateDir = e.b.enrollAgent(patchCore)
	start := time.Now()
	e.a = startAgent(t, e.stateDir)
	e.b.waitOnline(patchCore, start.Add(-time.Second))

	e.credential("ssh-root-key", e.sshd.ClientKeyPEM)
	e.credential("console-pw", []byte(testservers.ConsolePassword))
	host, portS, _ := net.SplitHostPort(e.sshd.Addr)
	port, _ := strconv.Atoi(portS)
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.sshd.HostKey)))
	for _, id := range []string{"ssh-dev", "ssh-dev-2"} {
		e.b.must(200, "PUT", "/targets/"+id, map[string]any{"deviceId": id, "coreName": patchCore,
			"connection": map[string]any{"type": "ssh", "host": host, "port": port, "username": "root",
				"auth":    map[string]any{"method": "privateKey", "credentialRef": "core:ssh-root-key"},
				"hostKey": hostKey, "hostKeyPolicy": "strict", "connectTimeoutSeconds": 10}})
		e.dirs[id] = deviceDir(t)
	}
	e.b.must(200, "PUT", "/targets/serial-dev", map[string]any{"deviceId": "serial-dev", "coreName": patchCore,
		"connection": map[string]any{"type": "serial", "port": e.console.Path, "baudRate": 115200,
			"login": map[string]any{"username": testservers.ConsoleUser, "credentialRef": "core:console-pw"}}})
	e.dirs["serial-dev"] = deviceDir(t)
	return e
}

// credential stores a secret on the core with `ggagent credentials set`.
func (e *patchEnv) credential(name string, value []byte) {
	e.t.Helper()
	f := filepath.Join(e.t.TempDir(), name)
	if err := os.WriteFile(f, value, 0o600); err != nil {
		e.t.Fatal(err)
	}
	if res := ggagent(e.t, nil, "credentials", "set", name, "--from-file", f, "--state-dir", e.stateDir); res.code != 0 {
		e.t.Fatalf("ggagent credentials set %s: %s", name, res)
	}
}

// deviceDir is a fresh directory on the "device" (this machine) any login
// may write to.
func deviceDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	_ = os.Chmod(dir, 0o777)
	for d := filepath.Dir(dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	return dir
}

// template creates a v2 patch template (POST answers 204).
func (e *patchEnv) template(name string, body map[string]any) {
	e.t.Helper()
	body["name"] = name
	e.b.must(204, "POST", "/patchTemplates", body)
}

// task submits a patch task; each patch is deviceId → template, with the
// device's directory as the variable out_dir. It returns the task id.
func (e *patchEnv) task(patches ...[2]string) string {
	e.t.Helper()
	var list []map[string]any
	for _, p := range patches {
		dir := e.dirs[p[0]]
		if dir == "" {
			dir = "/nonexistent"
		}
		list = append(list, map[string]any{"deviceId": p[0], "patchTemplateName": p[1],
			"extraVars": map[string]string{"out_dir": dir}})
	}
	r := e.b.must(202, "POST", "/patchTasks", map[string]any{"patches": list})
	id := r.Header.Get("x-taskid")
	if id == "" || r.Header.Get("Location") != "/patchTasks/"+id {
		e.t.Fatalf("POST /patchTasks: x-taskId %q, Location %q", id, r.Header.Get("Location"))
	}
	return id
}

// patches lists a task's patches by device id.
func (e *patchEnv) patches(taskID string) map[string]patchObj {
	e.t.Helper()
	var l struct {
		Patches []patchObj `json:"patches"`
	}
	e.b.must(200, "GET", "/patchTasks/"+taskID+"/patches", nil).JSON(e.t, &l)
	out := map[string]patchObj{}
	for _, p := range l.Patches {
		out[p.DeviceID] = p
	}
	return out
}

// waitFinal polls until every patch of the task has an outcome: a patch
// must never stay stuck.
func (e *patchEnv) waitFinal(taskID string, n int) map[string]patchObj {
	e.t.Helper()
	var got map[string]patchObj
	waitFor(e.t, 3*time.Minute, "every patch of task "+taskID+" to end", func() bool {
		got = e.patches(taskID)
		if len(got) != n {
			return false
		}
		for _, p := range got {
			if !p.final() {
				return false
			}
		}
		return true
	})
	return got
}

// steps returns GET /patches/{id}/steps by step name.
func (e *patchEnv) steps(patchID string) map[string]stepObj {
	e.t.Helper()
	var l struct {
		Steps []stepObj `json:"steps"`
	}
	e.b.must(200, "GET", "/patches/"+patchID+"/steps", nil).JSON(e.t, &l)
	out := map[string]stepObj{}
	for _, s := range l.Steps {
		out[s.Name] = s
	}
	return out
}

// logs returns GET /patches/{id}/logs for one step and stream.
func (e *patchEnv) logs(patchID, step, stream string) string {
	e.t.Helper()
	q := url.Values{"step": {step}, "stream": {stream}}
	return string(e.b.must(200, "GET", "/patches/"+patchID+"/logs?"+q.Encode(), nil).Body)
}

func wantPatch(t *testing.T, p patchObj, status, message string) {
	t.Helper()
	if p.PatchStatus != status || p.StatusMessage != message {
		t.Errorf("patch %s on %s: %s %q, want %s %q", p.PatchID, p.DeviceID, p.PatchStatus, p.StatusMessage, status, message)
	}
}

// TestPatchJourney patches real client devices through the real broker and
// agent: an SSH device and a serial console, both reached through the
// core's ggagent with credentials stored on the core; then the ways a
// patch fails (a step's exit code, a timeout, a disabled template, a
// device without a target profile) and an agent killed mid-patch, after
// which every patch still ends.
func TestPatchJourney(t *testing.T) {
	e := startPatchEnv(t)
	b := e.b

	// The CDF activation endpoints are gone, and say what replaces them.
	r := b.do("GET", "/activations/4c8b2a9e-1d5f-4e3a-9b7c-0f6e2d1a3b5c", nil)
	if r.Status != 404 || !strings.Contains(r.Message(), "/targets/") {
		t.Errorf("GET /activations/{id}: %d %q, want 404 with a message naming /targets", r.Status, r.Message())
	}

	e.template("e2e-install", map[string]any{
		"description": "a file and two steps", "extraVars": map[string]string{"greeting": "hello"},
		"files": []map[string]any{{"path": "{{ .Vars.out_dir }}/config.txt", "mode": "0600", "template": true,
			"source": map[string]any{"inline": b64("greeting={{ .Vars.greeting }} device={{ .Device.ID }}\n")}}},
		"steps": []map[string]any{
			{"name": "install", "run": "cd \"$PATCH_VAR_OUT_DIR\" && cp config.txt installed.txt && echo installed on {{ .Device.ID }} && echo a-warning >&2",
				"timeoutSeconds": 60},
			{"name": "verify", "run": "cat \"$PATCH_VAR_OUT_DIR/installed.txt\"", "timeoutSeconds": 60},
		}})

	t.Run("ssh and serial succeed", func(t *testing.T) {
		task := e.task([2]string{"ssh-dev", "e2e-install"}, [2]string{"serial-dev", "e2e-install"})
		got := e.waitFinal(task, 2)
		for _, dev := range []string{"ssh-dev", "serial-dev"} {
			p := got[dev]
			wantPatch(t, p, "success", "AGENT:Success")
			if p.CoreName != patchCore || p.Attempt != 1 {
				t.Errorf("%s: coreName %q attempt %d, want %s 1", dev, p.CoreName, p.Attempt, patchCore)
			}
			want := "greeting=hello device=" + dev + "\n"
			if b, err := os.ReadFile(filepath.Join(e.dirs[dev], "installed.txt")); err != nil || string(b) != want {
				t.Errorf("%s: installed.txt = %q, %v; want %q", dev, b, err, want)
			}
			if fi, err := os.Stat(filepath.Join(e.dirs[dev], "config.txt")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: config.txt mode %v, %v; want 0600", dev, fi, err)
			}
			steps := e.steps(p.PatchID)
			inst, ver := steps["install"], steps["verify"]
			if inst.Status != "success" || inst.ExitCode == nil || *inst.ExitCode != 0 || !strings.Contains(inst.StdoutTail, "installed on "+dev) || !strings.Contains(inst.StderrTail, "a-warning") {
				t.Errorf("%s: install step = %+v", dev, inst)
			}
			if ver.Status != "success" || ver.StdoutTail != want || ver.Index <= inst.Index {
				t.Errorf("%s: verify step = %+v (install index %d)", dev, ver, inst.Index)
			}
			// Logs are streamed best effort while the step runs: wait for them.
			waitFor(t, time.Minute, dev+" install stdout in the stored logs", func() bool {
				return strings.Contains(e.logs(p.PatchID, "install", "stdout"), "installed on "+dev)
			})
			var one patchObj
			b.must(200, "GET", "/patches/"+p.PatchID, nil).JSON(t, &one)
			if one.PatchStatus != "success" || one.Logs == nil || !one.Logs.Available {
				t.Errorf("%s: GET /patches/{id} = %+v, want success with logs available", dev, one)
			}
		}
	})

	t.Run("failures", func(t *testing.T) {
		e.template("e2e-fail", map[string]any{"steps": []map[string]any{
			{"name": "ok", "run": "true"},
			{"name": "boom", "run": "echo about to fail; exit 3"},
			{"name": "never", "run": "touch \"$PATCH_VAR_OUT_DIR/never-ran\""}}})
		e.template("e2e-timeout", map[string]any{"steps": []map[string]any{
			{"name": "hang", "run": "sleep 600", "timeoutSeconds": 2}}})
		e.template("e2e-disabled", map[string]any{"enabled": false, "steps": []map[string]any{
			{"name": "x", "run": "touch \"$PATCH_VAR_OUT_DIR/disabled-ran\""}}})
		task := e.task(
			[2]string{"ssh-dev", "e2e-fail"},
			[2]string{"serial-dev", "e2e-timeout"},
			[2]string{"ssh-dev-2", "e2e-disabled"},
			[2]string{"ghost-dev", "e2e-install"})
		got := e.waitFinal(task, 4)
		wantPatch(t, got["ssh-dev"], "failed", "AGENT:Failed:boom:exit=3")
		wantPatch(t, got["serial-dev"], "failed", "AGENT:TimedOut:hang")
		wantPatch(t, got["ssh-dev-2"], "failed", "TEMPLATE_DISABLED")
		wantPatch(t, got["ghost-dev"], "failed", "DEVICE_ACTIVATION_NOT_FOUND")

		steps := e.steps(got["ssh-dev"].PatchID)
		if s := steps["boom"]; s.Status != "failed" || s.ExitCode == nil || *s.ExitCode != 3 || !strings.Contains(s.StdoutTail, "about to fail") {
			t.Errorf("boom step = %+v", s)
		}
		if s := steps["ok"]; s.Status != "success" {
			t.Errorf("ok step = %+v", s)
		}
		if s, ok := steps["never"]; ok && s.Status != "skipped" && s.Status != "pending" {
			t.Errorf("step after the failure = %+v, want skipped (or not run)", s)
		}
		if _, err := os.Stat(filepath.Join(e.dirs["ssh-dev"], "never-ran")); err == nil {
			t.Error("the step after a failed step ran")
		}
		if s := e.steps(got["serial-dev"].PatchID)["hang"]; s.Status != "timedout" {
			t.Errorf("hang step = %+v, want timedout", s)
		}
		if _, err := os.Stat(filepath.Join(e.dirs["ssh-dev-2"], "disabled-ran")); err == nil {
			t.Error("a disabled template ran")
		}
		if len(testservers.ProcessesRunning("sleep", "600")) > 0 {
			t.Error("the timed-out step's sleep is still running on the serial device")
		}

		// The serial console is usable again after the timeout's ^C.
		task = e.task([2]string{"serial-dev", "e2e-install"})
		wantPatch(t, e.waitFinal(task, 1)["serial-dev"], "success", "AGENT:Success")
	})

	t.Run("agent killed mid-patch", func(t *testing.T) {
		// Unique sleep durations tell the two steps' processes apart.
		e.template("e2e-slow-fail", map[string]any{"steps": []map[string]any{
			{"name": "slow", "run": "sleep 41", "timeoutSeconds": 120}}})
		e.template("e2e-slow-rerun", map[string]any{"steps": []map[string]any{
			{"name": "slow", "onInterrupt": "rerun", "timeoutSeconds": 120,
				"run": "cd \"$PATCH_VAR_OUT_DIR\" && if [ -f started ]; then echo second run; exit 0; fi; touch started; sleep 43"}}})
		task := e.task([2]string{"ssh-dev", "e2e-slow-fail"}, [2]string{"ssh-dev-2", "e2e-slow-rerun"})
		// The killed agent's remote commands outlive it (an SSH session's
		// command is not killed when its client dies); do not leave them.
		t.Cleanup(func() {
			for _, pid := range append(testservers.ProcessesRunning("sleep", "41"), testservers.ProcessesRunning("sleep", "43")...) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		waitFor(t, 2*time.Minute, "both slow steps to be running on the device", func() bool {
			return len(testservers.ProcessesRunning("sleep", "41")) > 0 && len(testservers.ProcessesRunning("sleep", "43")) > 0
		})
		e.a.kill()
		e.a.start()
		got := e.waitFinal(task, 2)
		wantPatch(t, got["ssh-dev"], "failed", "AGENT:Interrupted")
		wantPatch(t, got["ssh-dev-2"], "success", "AGENT:Success")
		if s := e.steps(got["ssh-dev-2"].PatchID)["slow"]; s.Status != "success" || !strings.Contains(s.StdoutTail, "second run") {
			t.Errorf("rerun step = %+v, want success from its second run", s)
		}
		if s := e.steps(got["ssh-dev"].PatchID)["slow"]; s.Status != "failed" {
			t.Errorf("interrupted step = %+v, want failed", s)
		}
	})

	// Every patch of the device ends up in its history.
	var hist struct {
		Patches []patchObj `json:"patches"`
	}
	b.must(200, "GET", "/devices/ssh-dev/patches", nil).JSON(t, &hist)
	var msgs []string
	for _, p := range hist.Patches {
		msgs = append(msgs, p.StatusMessage)
	}
	slices.Sort(msgs)
	if want := []string{"AGENT:Failed:boom:exit=3", "AGENT:Interrupted", "AGENT:Success"}; !slices.Equal(msgs, want) {
		t.Errorf("GET /devices/ssh-dev/patches status messages = %v, want %v", msgs, want)
	}
}

// b64 is the inline-source encoding of s.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
