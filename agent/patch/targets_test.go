package patch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
	"golang.org/x/crypto/ssh"
)

func TestTOFUProbeAndChangedKey(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	target := sshTarget(t, srv, state, "dev-tofu")
	target.Connection.HostKey, target.Connection.HostKeyPolicy = "", patchmsg.HostKeyTOFU

	r.Probe(patchmsg.ProbeRequest{Version: 1, ProbeID: "pr-1", DeviceID: "dev-tofu", Target: target})
	waitFor(t, "the probe result", func() bool {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		return len(pub.probes) == 1
	})
	pr := pub.probes[0]
	fp := ssh.FingerprintSHA256(srv.HostKey)
	if !pr.OK || !strings.HasPrefix(pr.Uname, "Linux") || pr.HostKeyFingerprint != fp || pr.ProbeID != "pr-1" {
		t.Errorf("probe result %+v, want ok, uname and fingerprint %s", pr, fp)
	}
	if fi, err := os.Stat(filepath.Join(state, "known_hosts")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tofu key not recorded in the state dir: %v %v", fi, err)
	}

	r.Handle(newJob("p-1", target, patchmsg.StepSpec{Name: "s", Run: "true"}))
	if done := pub.waitCompleted(t, "p-1", 1); done.Status != patchmsg.PatchSuccess {
		t.Fatalf("patch with the recorded key: %q", done.StatusMessage)
	}
	conn := pub.waitEvent(t, "p-1", 1, "connected", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventConnected })
	if conn.HostKeyFingerprint != fp {
		t.Errorf("connected fingerprint %q, want %q", conn.HostKeyFingerprint, fp)
	}

	srv.ChangeHostKey()
	r.Handle(newJob("p-2", target, patchmsg.StepSpec{Name: "s", Run: "true"}))
	if done := pub.waitCompleted(t, "p-2", 1); done.StatusMessage != "AGENT:Transport:HOST_KEY_MISMATCH" {
		t.Errorf("patch after the key changed: %q, want AGENT:Transport:HOST_KEY_MISMATCH", done.StatusMessage)
	}

	// A probe with a credential the core lacks says so.
	target.Connection.Auth = &patchmsg.Auth{Method: patchmsg.AuthPrivateKey, CredentialRef: "core:absent"} // p-2 still holds the old one
	r.Probe(patchmsg.ProbeRequest{Version: 1, ProbeID: "pr-2", DeviceID: "dev-tofu", Target: target})
	waitFor(t, "the second probe result", func() bool {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		return len(pub.probes) == 2
	})
	if pr := pub.probes[1]; pr.OK || !strings.HasPrefix(pr.Error, patchmsg.RejectCredentialMissing) {
		t.Errorf("probe without credential: %+v", pr)
	}
}

func TestExpectDisconnect(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	job := newJob("p-reboot", sshTarget(t, srv, state, "dev-1"),
		// Like a reboot: the session dies under the command.
		patchmsg.StepSpec{Name: "reboot", Run: "kill -KILL $PPID; sleep 5", ExpectDisconnect: true, ReconnectTimeoutSeconds: 60},
		patchmsg.StepSpec{Name: "after", Run: "echo back"},
	)
	r.Handle(job)
	done := pub.waitCompleted(t, "p-reboot", 1)
	if done.Status != patchmsg.PatchSuccess {
		t.Fatalf("completed %q; events:\n%s", done.StatusMessage, pub.dump("p-reboot", 1))
	}
	connects := 0
	for _, e := range pub.eventsOf("p-reboot", 1) {
		if e.Type == patchmsg.EventConnected {
			connects++
		}
	}
	if connects != 2 {
		t.Errorf("connected %d times, want 2 (before and after the disconnect)", connects)
	}
	if s := stepsOf(pub.eventsOf("p-reboot", 1)); s["after"].StdoutTail != "back\n" {
		t.Errorf("step after the reconnect: %+v", s["after"])
	}

	// Without expectDisconnect the same drop fails the patch.
	r.Handle(newJob("p-drop", sshTarget(t, srv, state, "dev-1"), patchmsg.StepSpec{Name: "drop", Run: "kill -KILL $PPID; sleep 5"}))
	if done := pub.waitCompleted(t, "p-drop", 1); done.StatusMessage != "AGENT:Transport:CONNECTION_LOST" {
		t.Errorf("unexpected drop: %q, want AGENT:Transport:CONNECTION_LOST", done.StatusMessage)
	}
}

func TestSerialConsole(t *testing.T) {
	t.Parallel()
	con := testservers.StartPtyShell(t, "dash", true)
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	setCred(t, state, "console", []byte(testservers.ConsolePassword+"\n"))
	dev := deviceDir(t)
	target := patchmsg.Target{DeviceID: "sensor-1", CoreName: "core-1", Connection: patchmsg.Connection{
		Type: patchmsg.ConnSerial, SerialPort: con.Path, BaudRate: 115200,
		Login: &patchmsg.Login{Username: testservers.ConsoleUser, CredentialRef: "core:console"}}}
	job := newJob("p-serial", target,
		patchmsg.StepSpec{Name: "show", Run: `cat "$PATCH_VAR_DIR/app.conf"; echo "pw? ` + testservers.ConsolePassword + `"`},
		patchmsg.StepSpec{Name: "fail", Run: "exit 5"},
	)
	job.Vars = map[string]string{"dir": dev}
	job.Template.Files = []patchmsg.FileSpec{{Path: dev + "/app.conf", Mode: "0644", Template: true,
		Source: patchmsg.FileSource{Inline: b64("device={{ .Device.ID }}\n")}}}
	r.Handle(job)
	done := pub.waitCompleted(t, "p-serial", 1)
	if done.StatusMessage != "AGENT:Failed:fail:exit=5" {
		t.Fatalf("completed %q; events:\n%s", done.StatusMessage, pub.dump("p-serial", 1))
	}
	s := stepsOf(pub.eventsOf("p-serial", 1))
	if s["show"].StdoutTail != "device=sensor-1\npw? "+RedactionMarker+"\n" {
		t.Errorf("show step stdout %q", s["show"].StdoutTail)
	}
	if strings.Contains(pub.allRaw(), testservers.ConsolePassword) {
		t.Errorf("the console password reached a report")
	}
}
