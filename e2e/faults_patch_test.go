package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"golang.org/x/crypto/ssh"
)

// The patch cases of the fault suite: `ggfleet serve` SIGKILLed at random
// points of a 20-device patch task, and ggagent SIGKILLed while a patch
// step runs on a client device. Every step of the templates below appends
// a line to a marker file in the device's out_dir, so a test counts how
// many times each step really ran on each device.

// addSSHTarget registers (or re-registers) a target on the patch
// environment's sshd (one sshd serves any number of device ids) with a
// directory of its own. It logs in as testservers.PasswordUser, whose rc
// files are the distribution's: root's on a developer machine may run
// heavy initialisation (pyenv, cargo) on every SSH session, which made
// each step take 15-40 s on the busy 2-CPU VM.
func (e *patchEnv) addSSHTarget(id string) {
	e.t.Helper()
	host, portS, _ := net.SplitHostPort(e.sshd.Addr)
	port, _ := strconv.Atoi(portS)
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.sshd.HostKey)))
	e.b.must(200, "PUT", "/targets/"+id, map[string]any{"deviceId": id, "coreName": patchCore,
		"connection": map[string]any{"type": "ssh", "host": host, "port": port, "username": testservers.PasswordUser,
			"auth":    map[string]any{"method": "privateKey", "credentialRef": "core:ssh-root-key"},
			"hostKey": hostKey, "hostKeyPolicy": "strict", "connectTimeoutSeconds": 10}})
	if e.dirs[id] == "" {
		e.dirs[id] = deviceDir(e.t)
	}
}

// addSerialTarget starts another console (shell behind a pseudo-terminal
// with a login) and registers it as a serial target.
func (e *patchEnv) addSerialTarget(id, shell string) {
	e.t.Helper()
	console := testservers.StartPtyShell(e.t, shell, true)
	e.b.must(200, "PUT", "/targets/"+id, map[string]any{"deviceId": id, "coreName": patchCore,
		"connection": map[string]any{"type": "serial", "port": console.Path, "baudRate": 115200,
			"login": map[string]any{"username": testservers.ConsoleUser, "credentialRef": "core:console-pw"}}})
	e.dirs[id] = deviceDir(e.t)
}

// runDirs makes, per device, a fresh sub-directory of its directory for
// one round of a test, which any login may write to.
func (e *patchEnv) runDirs(round string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for dev, dir := range e.dirs {
		sub := filepath.Join(dir, round)
		if err := os.Mkdir(sub, 0o777); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Chmod(sub, 0o777); err != nil { // past the umask
			e.t.Fatal(err)
		}
		out[dev] = sub
	}
	return out
}

// taskIn submits a patch task of one template to every device of dirs,
// each with its directory as out_dir, at most maxConcurrency at once.
func (e *patchEnv) taskIn(template string, dirs map[string]string, maxConcurrency int) string {
	e.t.Helper()
	var list []map[string]any
	for dev, dir := range dirs {
		list = append(list, map[string]any{"deviceId": dev, "patchTemplateName": template,
			"extraVars": map[string]string{"out_dir": dir}})
	}
	r := e.b.must(202, "POST", "/patchTasks", map[string]any{"patches": list, "maxConcurrency": maxConcurrency})
	id := r.Header.Get("x-taskid")
	if id == "" {
		e.t.Fatalf("POST /patchTasks answered no x-taskId: %s", r.Body)
	}
	return id
}

// patchTask is the part of GET /patchTasks/{id} the fault tests read.
type patchTask struct {
	Status string         `json:"status"`
	Counts map[string]int `json:"patchStatusCounts"`
}

func (e *patchEnv) patchTask(id string) patchTask {
	e.t.Helper()
	var task patchTask
	e.b.must(200, "GET", "/patchTasks/"+id, nil).JSON(e.t, &task)
	return task
}

// markerRuns counts how many times a step marked its run in dir (one line
// per run in <dir>/<step>.runs; 0 when it never ran).
func markerRuns(t *testing.T, dir, step string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, step+".runs"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// wantRuns checks the marker counts of one device's round.
func wantRuns(t *testing.T, dev, dir string, want map[string]int) {
	t.Helper()
	for step, n := range want {
		if got := markerRuns(t, dir, step); got != n {
			t.Errorf("%s: step %q ran %d times, want %d", dev, step, got, n)
		}
	}
}

// journalRecord is the part of an agent journal record
// (<state-dir>/patches/<patchId>.<attempt>.json) the tests read.
type journalRecord struct {
	Job struct {
		PatchID string `json:"patchId"`
		Attempt int    `json:"attempt"`
	} `json:"job"`
	State    string `json:"state"`
	Reported bool   `json:"reported"`
}

// agentJournal reads the agent's patch journal, by patch id.
func agentJournal(t *testing.T, stateDir string) map[string][]journalRecord {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(stateDir, "patches", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]journalRecord{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rec journalRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatalf("agent journal record %s: %v", f, err)
		}
		out[rec.Job.PatchID] = append(out[rec.Job.PatchID], rec)
	}
	return out
}

// wantJournalDone checks that the agent journaled each patch of got once
// (one attempt) and that every record is finished and reported: nothing is
// left for the agent to run or to send.
func wantJournalDone(t *testing.T, stateDir string, got map[string]patchObj) {
	t.Helper()
	journal := agentJournal(t, stateDir)
	for dev, p := range got {
		recs := journal[p.PatchID]
		if len(recs) != 1 || recs[0].Job.Attempt != 1 || recs[0].State != "finished" || !recs[0].Reported {
			t.Errorf("%s: agent journal of patch %s = %+v, want one finished and reported record of attempt 1", dev, p.PatchID, recs)
		}
	}
}

// killMarkedTemplate writes a file and runs three steps, each marking its
// run; install takes a moment so that kills land mid-step too.
var killMarkedTemplate = map[string]any{
	"description": "fault suite: marks every step's run",
	"files": []map[string]any{{"path": "{{ .Vars.out_dir }}/patched.txt", "template": true,
		"source": map[string]any{"inline": b64("patched {{ .Device.ID }}\n")}}},
	"steps": []map[string]any{
		{"name": "prepare", "run": `echo run >> "$PATCH_VAR_OUT_DIR/prepare.runs"`, "timeoutSeconds": 60},
		{"name": "install", "timeoutSeconds": 60,
			"run": `echo run >> "$PATCH_VAR_OUT_DIR/install.runs" && sleep 1 && echo "installed {{ .Device.ID }}"`},
		{"name": "verify", "run": `echo run >> "$PATCH_VAR_OUT_DIR/verify.runs" && cat "$PATCH_VAR_OUT_DIR/patched.txt"`, "timeoutSeconds": 60},
	},
}

// TestFaultsBrokerKillPatchTask kills `ggfleet serve` with SIGKILL at a
// random point of a 20-device patch task (18 SSH devices on one sshd, two
// serial consoles; at most 5 patched at once), once per seed, and restarts
// it on the same data dir. The agent keeps running through the kill: its
// events wait in its outbox; should a kill land between marking a patch
// dispatched and publishing its job, the job is re-sent when the agent
// says hello, and a job sent twice is answered from the agent's journal
// (the closing log line counts both). After the restart the task must end
// success with every patch success on attempt 1, every step must have run
// exactly once on every device (marker files; the templates keep the
// default onInterrupt fail, and a broker kill interrupts nothing on the
// core, so no step may run again), every step result must be stored, the
// logs of each patch the restarted broker dispatched must hold the step's
// output exactly once (earlier patches' logs may miss chunks sent while
// the broker was down: log chunks are best effort, never repeated), and
// the database must hold exactly one patch row per device and task.
func TestFaultsBrokerKillPatchTask(t *testing.T) {
	seeds := scale(3, 10)
	const n, concurrency = 20, 5
	faultCase(t, "%d seeds of a %d-device patch task (18 SSH, 2 serial), maxConcurrency %d", seeds, n, concurrency)
	e := startPatchEnv(t) // ssh-dev, ssh-dev-2 and the serial console serial-dev
	e.addSSHTarget("ssh-dev")
	e.addSSHTarget("ssh-dev-2")
	for i := 3; i <= 18; i++ {
		e.addSSHTarget(fmt.Sprintf("ssh-dev-%d", i))
	}
	e.addSerialTarget("serial-dev-2", "bash")
	if len(e.dirs) != n {
		t.Fatalf("%d targets, want %d", len(e.dirs), n)
	}
	e.template("kill-marked", killMarkedTemplate)

	for seed := 1; seed <= seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 30))
		dirs := e.runDirs(fmt.Sprintf("seed-%d", seed))
		task := e.taskIn("kill-marked", dirs, concurrency)

		// Kill once a random number of patches ended, plus a random moment:
		// at most n-concurrency, so that patches are both running (their
		// events wait in the agent's outbox) and waiting to be dispatched
		// (by the restarted broker).
		target := rng.IntN(n - concurrency + 1)
		waitFor(t, 3*time.Minute, fmt.Sprintf("seed %d: %d patches ended", seed, target), func() bool {
			done := 0
			for _, p := range e.patches(task) {
				if p.final() {
					done++
				}
			}
			return done >= target
		})
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		status := map[string]int{}
		for _, p := range e.patches(task) {
			status[p.PatchStatus]++
		}
		e.b.kill()
		killedAt := time.Now()
		down := time.Duration(rng.IntN(2000)) * time.Millisecond
		t.Logf("seed %d: task %s, broker killed (aimed at %d ended patches) with patches %v, down %s", seed, task, target, status, down)
		time.Sleep(down)
		e.b.restart()

		got := e.waitFinal(task, n)
		if tk := e.patchTask(task); tk.Status != "success" || tk.Counts["success"] != n || tk.Counts["total"] != n {
			t.Errorf("seed %d: task after the kill = %+v, want success with %d of %d patches success", seed, tk, n, n)
		}
		afterKill := 0
		for dev, p := range got {
			wantPatch(t, p, "success", "AGENT:Success")
			if p.Attempt != 1 {
				t.Errorf("seed %d, %s: attempt %d, want 1", seed, dev, p.Attempt)
			}
			wantRuns(t, dev, dirs[dev], map[string]int{"prepare": 1, "install": 1, "verify": 1})
			want := "patched " + dev + "\n"
			if b, err := os.ReadFile(filepath.Join(dirs[dev], "patched.txt")); err != nil || string(b) != want {
				t.Errorf("seed %d, %s: patched.txt = %q, %v; want %q", seed, dev, b, err, want)
			}
			steps := e.steps(p.PatchID)
			for _, name := range []string{"prepare", "install", "verify"} {
				if s := steps[name]; s.Status != "success" || s.Attempts != 1 {
					t.Errorf("seed %d, %s: step %s = %+v, want success on its first attempt", seed, dev, name, s)
				}
			}
			line := "installed " + dev + "\n"
			if s := steps["install"]; strings.Count(s.StdoutTail, line) != 1 {
				t.Errorf("seed %d, %s: install stdout tail %q, want %q once", seed, dev, s.StdoutTail, line)
			}
			q := `SELECT COUNT(*) FROM patches WHERE patch_id = ? AND dispatched_at > ?`
			if queryInt(t, e.b.dataDir, q, p.PatchID, killedAt.UnixMilli()) == 1 {
				afterKill++
				waitFor(t, time.Minute, dev+"'s install output in the stored logs", func() bool {
					return strings.Contains(e.logs(p.PatchID, "install", "stdout"), line)
				})
			}
			if c := strings.Count(e.logs(p.PatchID, "install", "stdout"), line); c > 1 {
				t.Errorf("seed %d, %s: the stored log holds the install output %d times", seed, dev, c)
			}
		}
		t.Logf("seed %d: every patch success; %d dispatched by the restarted broker", seed, afterKill)
		wantJournalDone(t, e.stateDir, got)
		for _, q := range []string{
			`SELECT COUNT(*) FROM patches WHERE task_id = ?`,
			`SELECT COUNT(DISTINCT device_id) FROM patches WHERE task_id = ?`,
		} {
			if c := queryInt(t, e.b.dataDir, q, task); c != n {
				t.Errorf("seed %d: %s = %d, want %d", seed, q, c, n)
			}
		}
	}
	if c := queryInt(t, e.b.dataDir, `SELECT COUNT(*) FROM patch_tasks`); c != seeds {
		t.Errorf("%d patch tasks stored, want %d", c, seeds)
	}
	t.Logf("%d seeds: %d patches; %d jobs sent (re-sends after hello included), %d duplicate starts answered from the agent's journal",
		seeds, seeds*n, brokerLogCount(t, e.b, "patch job sent"), strings.Count(e.a.log(), "duplicate patch start"))
}

// brokerLogCount counts the lines holding s in every run's log of b.
func brokerLogCount(t *testing.T, b *broker, s string) int {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(b.dataDir, "broker-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(data), s)
	}
	return n
}

// interruptTemplate is three marked steps; slow sleeps for a duration
// unique to each device (so the test can find its process) and, with
// onInterrupt rerun, ends at once on its second run.
func interruptTemplate(onInterrupt string) map[string]any {
	slow := `echo run >> "$PATCH_VAR_OUT_DIR/slow.runs"
if [ "$(wc -l < "$PATCH_VAR_OUT_DIR/slow.runs")" -ge 2 ]; then echo second run; exit 0; fi
sleep "$PATCH_VAR_SLEEP"`
	return map[string]any{"steps": []map[string]any{
		{"name": "before", "run": `echo run >> "$PATCH_VAR_OUT_DIR/before.runs"`, "timeoutSeconds": 60},
		{"name": "slow", "run": slow, "onInterrupt": onInterrupt, "timeoutSeconds": 900},
		{"name": "after", "run": `echo run >> "$PATCH_VAR_OUT_DIR/after.runs"`, "timeoutSeconds": 60},
	}}
}

// TestFaultsAgentKilledMidPatch kills ggagent with SIGKILL while the slow
// step of a patch runs on four devices (SSH and serial, each with
// onInterrupt fail and rerun), then starts it again. What agent/patch
// does, and what is asserted:
//   - fail: the restarted agent does not contact the device; the patch
//     ends failed AGENT:Interrupted, the step failed INTERRUPTED, the step
//     after it skipped, nothing ran again (markers: 1, 1, 0).
//   - rerun: the step runs again from its start (the step before it does
//     not), the patch goes on and ends success (markers: 1, 2, 1).
//
// The broker's task ends failed with two of each, the agent's journal has
// nothing left to run or send, and a follow-up patch to every device
// succeeds: a serial console whose interrupted command still held it is
// usable again. The first run's remote command outlives the killed agent
// (an SSH session's command is not killed with its client, and a serial
// console keeps running what it was given); the test kills leftovers.
func TestFaultsAgentKilledMidPatch(t *testing.T) {
	rounds := scale(1, 3)
	faultCase(t, "%d rounds of ggagent SIGKILLed mid-step on 2 SSH and 2 serial devices", rounds)
	e := startPatchEnv(t) // ssh-dev, ssh-dev-2 and the serial console serial-dev
	e.addSSHTarget("ssh-dev")
	e.addSSHTarget("ssh-dev-2")
	e.addSerialTarget("serial-dev-2", "bash")
	e.template("ki-fail", interruptTemplate("fail"))
	e.template("ki-rerun", interruptTemplate("rerun"))
	e.template("ki-after", map[string]any{"steps": []map[string]any{
		{"name": "check", "run": `echo run >> "$PATCH_VAR_OUT_DIR/check.runs"`, "timeoutSeconds": 60}}})
	policy := map[string]string{"ssh-dev": "fail", "ssh-dev-2": "rerun", "serial-dev": "fail", "serial-dev-2": "rerun"}

	for round := 1; round <= rounds; round++ {
		rng := rand.New(rand.NewPCG(uint64(round), 40))
		dirs := e.runDirs(fmt.Sprintf("round-%d", round))
		// Unique sleeps tell the devices' processes apart across rounds.
		sleeps := map[string]string{}
		var list []map[string]any
		i := 0
		for dev, pol := range policy {
			i++
			sleeps[dev] = strconv.Itoa(900 + 10*round + i)
			list = append(list, map[string]any{"deviceId": dev, "patchTemplateName": "ki-" + pol,
				"extraVars": map[string]string{"out_dir": dirs[dev], "sleep": sleeps[dev]}})
		}
		t.Cleanup(func() {
			for _, s := range sleeps {
				for _, pid := range testservers.ProcessesRunning("sleep", s) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
		task := e.b.must(202, "POST", "/patchTasks", map[string]any{"patches": list}).Header.Get("x-taskid")
		waitFor(t, 2*time.Minute, "the slow step running on every device", func() bool {
			for _, s := range sleeps {
				if len(testservers.ProcessesRunning("sleep", s)) == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		e.a.kill()
		down := time.Duration(rng.IntN(3000)) * time.Millisecond
		t.Logf("round %d: task %s, ggagent killed mid-step, down %s", round, task, down)
		time.Sleep(down)
		e.a.start()

		got := e.waitFinal(task, len(policy))
		if tk := e.patchTask(task); tk.Status != "failed" || tk.Counts["failed"] != 2 || tk.Counts["success"] != 2 {
			t.Errorf("round %d: task = %+v, want failed with 2 failed and 2 success", round, tk)
		}
		for dev, pol := range policy {
			p, steps := got[dev], e.steps(got[dev].PatchID)
			if pol == "fail" {
				wantPatch(t, p, "failed", "AGENT:Interrupted")
				wantRuns(t, dev, dirs[dev], map[string]int{"before": 1, "slow": 1, "after": 0})
				if s := steps["slow"]; s.Status != "failed" || s.Error != "INTERRUPTED" {
					t.Errorf("round %d, %s: interrupted step = %+v, want failed INTERRUPTED", round, dev, s)
				}
				if s := steps["after"]; s.Status != "skipped" {
					t.Errorf("round %d, %s: step after the interrupted one = %+v, want skipped", round, dev, s)
				}
			} else {
				wantPatch(t, p, "success", "AGENT:Success")
				wantRuns(t, dev, dirs[dev], map[string]int{"before": 1, "slow": 2, "after": 1})
				if s := steps["slow"]; s.Status != "success" || !strings.Contains(s.StdoutTail, "second run") {
					t.Errorf("round %d, %s: rerun step = %+v, want success from its second run", round, dev, s)
				}
				if s := steps["after"]; s.Status != "success" {
					t.Errorf("round %d, %s: step after the rerun = %+v, want success", round, dev, s)
				}
			}
			if s := steps["before"]; s.Status != "success" || s.Attempts != 1 {
				t.Errorf("round %d, %s: step before the kill = %+v, want success on its first attempt", round, dev, s)
			}
		}
		wantJournalDone(t, e.stateDir, got)

		// Nothing is stuck: every device takes the next patch.
		after := e.taskIn("ki-after", dirs, 4)
		for dev, p := range e.waitFinal(after, len(policy)) {
			wantPatch(t, p, "success", "AGENT:Success")
			wantRuns(t, dev, dirs[dev], map[string]int{"check": 1})
		}
		// The serial consoles' interrupted commands were stopped to run it.
		for _, dev := range []string{"serial-dev", "serial-dev-2"} {
			if pids := testservers.ProcessesRunning("sleep", sleeps[dev]); len(pids) > 0 {
				t.Errorf("round %d, %s: the interrupted step's sleep is still running on the console", round, dev)
			}
		}
	}
}
