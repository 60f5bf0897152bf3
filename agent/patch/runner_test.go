package patch

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestSuccessWithFilesAndSteps(t *testing.T) {
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	dev := deviceDir(t)

	remote := "downloaded content\n"
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
		{Path: dev + "/sub/dir/remote.txt", Mode: "0640", SHA256: hex.EncodeToString(sum[:]),
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
		types = append(types, e.Type)
		if e.Seq != int64(i+1) {
			t.Errorf("event %d (%s) has seq %d, want %d", i, e.Type, e.Seq, i+1)
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
	wantOut := `{"thingName": "thing-7"}` + "\n" + remote +
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
