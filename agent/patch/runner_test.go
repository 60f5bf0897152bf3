package patch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestSuccessWithFilesAndSteps(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	dev := deviceDir(t)

	remote := "downloaded for {{ .Device.ID }}\n"
	sum := sha256.Sum256([]byte(remote))
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(remote)) }))
	defer web.Close()

	job := newJob("p-ok", sshTarget(t, srv, state, "dev-1"),
		patchmsg.StepSpec{Name: "check", Run: `set -e
test "$PATCH_VAR_INSTALL_DIR" = ` + dev + `
cat {{ .Vars.install_dir }}/config.json
echo
cat "$PATCH_VAR_INSTALL_DIR/sub/dir/remote.txt"
echo "to stderr" >&2
echo "patch={{ .Patch.ID }} attempt={{ .Patch.Attempt }} device={{ .Device.ID }} core={{ .Core.Name }} quoted={{ shq .Vars.tricky }}"
echo "custom=$CUSTOM workdir=$(pwd)"`, Env: map[string]string{"CUSTOM": "yes"}},
		patchmsg.StepSpec{Name: "big", Run: `i=0; while [ $i -lt 3000 ]; do echo "line $i of a long output to be chunked"; i=$((i+1)); done`, MaxOutputBytes: 1000},
	)
	job.Vars = map[string]string{"install_dir": dev, "thing_name": "thing-7", "tricky": "it's"}
	job.Template.Files = []patchmsg.FileSpec{
		{Path: "{{ .Vars.install_dir }}/config.json", Mode: "0600", Template: true,
			Source: patchmsg.FileSource{Inline: b64(`{"thingName": "{{ .Vars.thing_name }}"}`)}},
		{Path: dev + "/sub/dir/remote.txt", Mode: "0640", SHA256: hex.EncodeToString(sum[:]), Template: true,
			Source: patchmsg.FileSource{URL: web.URL + "/remote.txt?X-Sig=secret"}},
	}
	r.Handle(job)
	done := pub.waitCompleted(t, "p-ok", 1)
	if done.Status != patchmsg.PatchSuccess || done.StatusMessage != "AGENT:Success" {
		t.Fatalf("completed %+v; events:\n%s", done, pub.dump("p-ok", 1))
	}
	evs := pub.eventsOf("p-ok", 1)
	var types []string
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Errorf("event %d (%s) has seq %d, want %d", i, e.Type, e.Seq, i+1)
		}
		if e.Type != patchmsg.EventHeartbeat { // one every 30s on a slow machine
			types = append(types, e.Type)
		}
	}
	want := "accepted connected file file step-started step-finished step-started step-finished completed"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	for _, e := range evs {
		if e.Type == patchmsg.EventFile && (!e.File.OK || e.File.SHA256 == "") {
			t.Errorf("file event %+v", e.File)
		}
	}
	steps := stepsOf(evs)
	check := steps["check"]
	wantOut := `{"thingName": "thing-7"}` + "\n" + "downloaded for dev-1\n" +
		"patch=p-ok attempt=1 device=dev-1 core=core-1 quoted='it'\\''s'\n" +
		"custom=yes workdir=/tmp/ggpatch-p-ok-1\n"
	if check.Status != patchmsg.StepSuccess || check.ExitCode == nil || *check.ExitCode != 0 || check.StdoutTail != wantOut || check.StderrTail != "to stderr\n" {
		t.Errorf("check step %+v\nwant stdout %q", check, wantOut)
	}
	if got := pub.logText("p-ok", "check", patchmsg.StreamStdout); got != wantOut {
		t.Errorf("streamed stdout %q, want %q", got, wantOut)
	}
	for path, mode := range map[string]os.FileMode{filepath.Join(dev, "config.json"): 0o600, filepath.Join(dev, "sub/dir/remote.txt"): 0o640} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, fi, err, mode)
		}
	}
	big := steps["big"]
	if !big.Truncated || len(big.StdoutTail) != 1000 || !strings.HasSuffix(big.StdoutTail, "line 2999 of a long output to be chunked\n") {
		t.Errorf("big step tail: truncated=%v len=%d", big.Truncated, len(big.StdoutTail))
	}
	full := pub.logText("p-ok", "big", patchmsg.StreamStdout)
	if !strings.HasPrefix(full, "line 0 of") || !strings.HasSuffix(full, "line 2999 of a long output to be chunked\n") {
		t.Errorf("streamed big output is incomplete (%d bytes)", len(full))
	}
	pub.mu.Lock()
	chunks, eofs := 0, 0
	for _, c := range pub.logs {
		if len(c.Data) > patchmsg.MaxLogChunk {
			t.Errorf("log chunk of %d bytes", len(c.Data))
		}
		if c.PatchID == "p-ok" && c.Step == "big" {
			chunks++
			if c.EOF {
				eofs++
			}
		}
	}
	pub.mu.Unlock()
	if chunks < 10 || eofs != 1 {
		t.Errorf("big step sent %d chunks with %d EOF; want ≥10 chunks (≈110 KB / 8 KiB) and one EOF", chunks, eofs)
	}
	if _, err := os.Stat("/tmp/ggpatch-p-ok-1"); err == nil {
		t.Errorf("default workdir left behind after success")
	}
	if strings.Contains(pub.allRaw(), "X-Sig=secret") {
		t.Errorf("a presigned URL's query reached the reports")
	}
	if ps := r.Patches(); len(ps) != 1 || ps[0].State != stateFinished {
		t.Errorf("Patches() = %+v", ps)
	}
}

// TestStepOutcomes runs one patch per outcome at once, each on its own
// device (lane), against one sshd.
func TestStepOutcomes(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	dev := deviceDir(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("other")) }))
	defer web.Close()
	counter := func(name string) string {
		f := filepath.Join(dev, name)
		return `n=$(cat ` + f + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + f + `; echo "try $n"; `
	}
	cases := []struct {
		id       string
		steps    []patchmsg.StepSpec
		status   string
		message  string
		check    func(t *testing.T, steps map[string]patchmsg.StepResult)
		leftover []string // argv of a process that must be gone
		deadline time.Duration
		files    []patchmsg.FileSpec
	}{
		{id: "bad-download", steps: []patchmsg.StepSpec{{Name: "s", Run: "true"}},
			files:  []patchmsg.FileSpec{{Path: dev + "/never", SHA256: strings.Repeat("ab", 32), Source: patchmsg.FileSource{URL: web.URL + "/x"}}},
			status: patchmsg.PatchFailed, message: "AGENT:Transport:DOWNLOAD",
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				if s["s"].Status != patchmsg.StepSkipped {
					t.Errorf("step after the failed download: %+v, want skipped", s["s"])
				}
			}},
		{id: "fail", steps: []patchmsg.StepSpec{{Name: "a", Run: "echo before; exit 3"}, {Name: "b", Run: "echo never"}},
			status: patchmsg.PatchFailed, message: "AGENT:Failed:a:exit=3",
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				if s["a"].Status != patchmsg.StepFailed || *s["a"].ExitCode != 3 || s["a"].StdoutTail != "before\n" || s["a"].Error != "UNEXPECTED_EXIT_CODE" {
					t.Errorf("step a: %+v", s["a"])
				}
				if s["b"].Status != patchmsg.StepSkipped {
					t.Errorf("step b: %+v, want skipped", s["b"])
				}
			}},
		{id: "expected-code", steps: []patchmsg.StepSpec{{Name: "a", Run: "exit 3", ExpectExitCodes: []int{0, 3}}},
			status: patchmsg.PatchSuccess, message: "AGENT:Success"},
		{id: "timeout", steps: []patchmsg.StepSpec{{Name: "slow", Run: "echo started; sleep 3011", TimeoutSeconds: 10}},
			status: patchmsg.PatchFailed, message: "AGENT:TimedOut:slow", leftover: []string{"sleep", "3011"},
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				// Whether "started" made it out before the kill depends on the
				// machine's load; the transport suite proves the kill itself.
				if s["slow"].Status != patchmsg.StepTimedOut || s["slow"].Error != "TIMEOUT" {
					t.Errorf("step slow: %+v", s["slow"])
				}
			}},
		{id: "continue", steps: []patchmsg.StepSpec{{Name: "a", Run: "exit 1", ContinueOnError: true}, {Name: "b", Run: "echo ok"}},
			status: patchmsg.PatchSuccess, message: "AGENT:Success",
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				if s["a"].Status != patchmsg.StepFailed || s["b"].Status != patchmsg.StepSuccess {
					t.Errorf("steps: a %+v b %+v", s["a"], s["b"])
				}
			}},
		{id: "retries", steps: []patchmsg.StepSpec{{Name: "flaky", Run: counter("flaky") + `[ $n -ge 3 ]`, Retries: 3}},
			status: patchmsg.PatchSuccess, message: "AGENT:Success",
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				if s["flaky"].Attempts != 3 || s["flaky"].StdoutTail != "try 3\n" {
					t.Errorf("flaky: %+v, want success on attempt 3", s["flaky"])
				}
			}},
		{id: "retries-exhausted", steps: []patchmsg.StepSpec{{Name: "bad", Run: counter("bad") + "false", Retries: 1, RetryDelaySeconds: 1}},
			status: patchmsg.PatchFailed, message: "AGENT:Failed:bad:exit=1",
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				if s["bad"].Attempts != 2 {
					t.Errorf("bad: %+v, want 2 attempts", s["bad"])
				}
			}},
		{id: "deadline", steps: []patchmsg.StepSpec{{Name: "endless", Run: "sleep 3012"}},
			deadline: 40 * time.Second, status: patchmsg.PatchFailed, message: "AGENT:TimedOut:endless", leftover: []string{"sleep", "3012"}},
		{id: "no-capture", steps: []patchmsg.StepSpec{{Name: "quiet", Run: "echo hidden", CaptureOutput: "none"}},
			status: patchmsg.PatchSuccess, message: "AGENT:Success",
			check: func(t *testing.T, s map[string]patchmsg.StepResult) {
				if s["quiet"].StdoutTail != "" {
					t.Errorf("captureOutput none kept %q", s["quiet"].StdoutTail)
				}
			}},
	}
	for _, c := range cases {
		job := newJob(c.id, sshTarget(t, srv, state, "dev-"+c.id), c.steps...)
		if c.deadline > 0 {
			job.Deadline = time.Now().Add(c.deadline)
		}
		job.Template.Files = c.files
		r.Handle(job)
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			done := pub.waitCompleted(t, c.id, 1)
			if done.Status != c.status || done.StatusMessage != c.message {
				t.Errorf("completed %s %q, want %s %q; events:\n%s", done.Status, done.StatusMessage, c.status, c.message, pub.dump(c.id, 1))
			}
			if c.check != nil {
				c.check(t, stepsOf(pub.eventsOf(c.id, 1)))
			}
			if c.leftover != nil {
				waitGone(t, c.leftover...)
			}
		})
	}
}

// waitGone waits until no process runs with exactly argv.
func waitGone(t *testing.T, argv ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for len(testservers.ProcessesRunning(argv...)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%q still running", strings.Join(argv, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBecomeAndRedaction(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/sudo"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sudo not found but CI is set: .ci/run must `apt-get install -y sudo`")
		}
		t.Skip("sudo is not installed (apt-get install -y sudo)")
	}
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	setCred(t, state, "pw", []byte(testservers.Password+"\n"))
	target := sshTarget(t, srv, state, "dev-pw")
	target.Connection.Username = testservers.PasswordUser
	target.Connection.Auth = &patchmsg.Auth{Method: patchmsg.AuthPassword, CredentialRef: "core:pw"}
	half := len(testservers.Password) / 2
	job := newJob("p-become", target,
		patchmsg.StepSpec{Name: "root", Run: "id -u", Become: ptr(true)},
		patchmsg.StepSpec{Name: "leak", Run: "echo 'the password is " + testservers.Password + "'; " +
			// Split across two writes, on stderr too.
			"printf '%s' '" + testservers.Password[:half] + "' >&2; sleep 0.3; printf '%s\\n' '" + testservers.Password[half:] + "' >&2; exit 4"},
	)
	job.Template.Files = []patchmsg.FileSpec{{Path: deviceDir(t) + "/owned-by-root", Mode: "0600", Owner: "root:root",
		Source: patchmsg.FileSource{Inline: b64("x")}}}
	job.Template.Defaults.Become = true
	r.Handle(job)
	done := pub.waitCompleted(t, "p-become", 1)
	if done.StatusMessage != "AGENT:Failed:leak:exit=4" {
		t.Fatalf("completed %q; events:\n%s", done.StatusMessage, pub.dump("p-become", 1))
	}
	steps := stepsOf(pub.eventsOf("p-become", 1))
	if steps["root"].StdoutTail != "0\n" {
		t.Errorf("become step printed uid %q, want 0", steps["root"].StdoutTail)
	}
	leak := steps["leak"]
	if leak.StdoutTail != "the password is "+RedactionMarker+"\n" || leak.StderrTail != RedactionMarker+"\n" {
		t.Errorf("leak step tails: stdout %q stderr %q; want the password redacted", leak.StdoutTail, leak.StderrTail)
	}
	if got := pub.logText("p-become", "leak", patchmsg.StreamStderr); got != RedactionMarker+"\n" {
		t.Errorf("streamed stderr %q, want the redaction marker", got)
	}
	if strings.Contains(pub.allRaw(), testservers.Password) {
		t.Errorf("the password reached the broker in a report")
	}
	journal, _ := os.ReadFile(filepath.Join(state, journalDir, "p-become.1.json"))
	if strings.Count(string(journal), testservers.Password) > 1 { // once: the step script as the broker sent it
		t.Errorf("the password is in the journal's results")
	}
}

// TestCaptureOutput runs the same fast output with each captureOutput:
// full streams all of it (read back from the step log once the stream
// falls behind), tail drops what comes too fast from the stream, none
// keeps nothing; the step logs on disk have everything captured.
func TestCaptureOutput(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, func(c *Config) { c.LogChunksPerSec = 400 })
	const fast = `seq 1 120000` // ~700 KB at once: more than a stream holds in memory
	want := seqOutput(120000)
	job := newJob("p-cap", sshTarget(t, srv, state, "dev-1"),
		patchmsg.StepSpec{Name: "full", Run: fast, CaptureOutput: "full"},
		patchmsg.StepSpec{Name: "tail", Run: fast},
		patchmsg.StepSpec{Name: "none", Run: `echo hello; echo there >&2`, CaptureOutput: "none"},
	)
	r.Handle(job)
	if done := pub.waitCompleted(t, "p-cap", 1); done.Status != patchmsg.PatchSuccess {
		t.Fatalf("completed %+v; events:\n%s", done, pub.dump("p-cap", 1))
	}
	steps := stepsOf(pub.eventsOf("p-cap", 1))
	if got := pub.logText("p-cap", "full", patchmsg.StreamStdout); got != want {
		t.Errorf("full: streamed %d bytes, want all %d of the output in order", len(got), len(want))
	}
	tailed := pub.logText("p-cap", "tail", patchmsg.StreamStdout)
	if !strings.HasPrefix(tailed, "1\n2\n") || !strings.Contains(tailed, "bytes of output were not streamed") {
		t.Errorf("tail: streamed %d bytes without the note about what was dropped", len(tailed))
	}
	for _, name := range []string{"full", "tail"} {
		if st := steps[name]; !st.Truncated || !strings.HasSuffix(st.StdoutTail, "\n120000\n") {
			t.Errorf("%s: result tail truncated=%v ends %q", name, st.Truncated, st.StdoutTail[max(0, len(st.StdoutTail)-20):])
		}
	}
	if st := steps["none"]; st.StdoutTail != "" || st.StderrTail != "" || pub.logText("p-cap", "none", patchmsg.StreamStdout) != "" {
		t.Errorf("none: tails %q %q and a stream, want nothing captured", st.StdoutTail, st.StderrTail)
	}
	pub.mu.Lock()
	for _, c := range pub.logs {
		if c.PatchID == "p-cap" && c.Step == "none" {
			t.Errorf("none: log chunk %+v sent", c)
		}
	}
	pub.mu.Unlock()

	dir := r.journal.logDir("p-cap", 1)
	for i, name := range []string{"full", "tail"} {
		path := filepath.Join(dir, fmt.Sprintf("step-%d.stdout.log", i))
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("%s: step log has %d bytes, %v; want the whole output", name, len(b), err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: step log mode %v, %v; want 0600", name, fi.Mode(), err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "step-2.stdout.log")); !os.IsNotExist(err) {
		t.Errorf("none: a step log exists (%v)", err)
	}
	// Pruning the record removes its step logs.
	if err := r.journal.remove(&record{Job: patchmsg.Job{PatchID: "p-cap", Attempt: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("step logs left after the record was removed (%v)", err)
	}
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.String()
}
