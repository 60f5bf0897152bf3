package patch

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestJournalStartup(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, journalDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(rec record) {
		t.Helper()
		b, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(dir, rec.Job.PatchID+".1.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := func(id string, age time.Duration) record {
		ev := &patchmsg.Event{Version: 1, PatchID: id, Attempt: 1, Seq: 9, Type: patchmsg.EventCompleted, Status: patchmsg.PatchSuccess, StatusMessage: "AGENT:Success"}
		return record{Version: 1, Job: patchmsg.Job{PatchID: id, Attempt: 1, DeviceID: "d"}, State: stateFinished,
			Seq: 9, Completed: ev, Reported: true, UpdatedAt: time.Now().Add(-age)}
	}
	write(done("old", 8*24*time.Hour))
	write(done("recent", time.Hour))
	if err := os.WriteFile(filepath.Join(dir, "broken.1.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".rec-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	if ps := r.Patches(); len(ps) != 1 || ps[0].PatchID != "recent" || ps[0].State != stateFinished {
		t.Errorf("Patches() = %+v, want only the recent one", ps)
	}
	for name, want := range map[string]bool{"old.1.json": false, "recent.1.json": true, "broken.1.json": false, "broken.1.json.corrupt": true, ".rec-123": false} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", name, err == nil, want)
		}
	}
	// A duplicate start of the recent patch re-reports it without running.
	r.Handle(newJob("recent", patchmsg.Target{}, patchmsg.StepSpec{Name: "s", Run: "true"}))
	evs := pub.eventsOf("recent", 1)
	if len(evs) != 1 || evs[0].Type != patchmsg.EventCompleted || evs[0].Seq != 9 {
		t.Errorf("duplicate start answered with %+v, want the journaled completion", evs)
	}
}
