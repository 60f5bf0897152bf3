package patch

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// journalDir is the journal's folder inside the state directory.
const journalDir = "patches"

// Journal states of a patch attempt (also the "state" hello reports).
const (
	stateQueued   = "queued"
	stateRunning  = "running"
	stateFinished = "finished"
)

// record is one patch attempt's journal file: enough to resume it after a
// restart and to answer a duplicate start without running it again.
type record struct {
	Version int          `json:"version"`
	Job     patchmsg.Job `json:"job"`
	State   string       `json:"state"`
	// Seq is the last event sequence number used; LogSeq the last log chunk's.
	Seq    int64 `json:"seq"`
	LogSeq int64 `json:"logSeq"`
	// FilesDone is set once the workdir exists and every file is in place.
	FilesDone bool `json:"filesDone"`
	// NextStep is the index of the step to run next; StepRunning says it
	// had started (so a restart finds it interrupted).
	NextStep    int                   `json:"nextStep"`
	StepRunning bool                  `json:"stepRunning"`
	Steps       []patchmsg.StepResult `json:"steps,omitempty"`
	// Completed is the completed event, kept to re-send it; Reported says
	// it reached the publisher's durable outbox.
	Completed  *patchmsg.Event `json:"completed,omitempty"`
	Reported   bool            `json:"reported"`
	AcceptedAt time.Time       `json:"acceptedAt"`
	UpdatedAt  time.Time       `json:"updatedAt"`
}

// slim drops what a finished record no longer needs in memory: the job
// (templates, inline files) and the step results. Its identity and the
// completed event stay, which is all a duplicate start needs.
func (rec *record) slim() {
	j := rec.Job
	rec.Job = patchmsg.Job{Version: j.Version, Schema: j.Schema, PatchID: j.PatchID, TaskID: j.TaskID,
		Attempt: j.Attempt, DeviceID: j.DeviceID, Deadline: j.Deadline}
	rec.Steps = nil
}

// journal is the folder of records.
type journal struct {
	dir string
}

func openJournal(stateDir string) (*journal, error) {
	dir := filepath.Join(stateDir, journalDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open patch journal: %w", err)
	}
	return &journal{dir: dir}, nil
}

func knownHostsPath(stateDir string) string { return filepath.Join(stateDir, "known_hosts") }

// fileName is <patchId>.<attempt>.json; patch ids are checked to be safe
// file names before a job is accepted.
func (j *journal) fileName(patchID string, attempt int) string {
	return filepath.Join(j.dir, patchID+"."+strconv.Itoa(attempt)+".json")
}

// save writes rec atomically: temp file, fsync, rename, fsync the folder.
func (j *journal) save(rec *record) error {
	rec.UpdatedAt = time.Now().UTC()
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("journal patch %s: encode: %w", rec.Job.PatchID, err)
	}
	dst := j.fileName(rec.Job.PatchID, rec.Job.Attempt)
	tmp, err := os.CreateTemp(j.dir, ".rec-*")
	if err != nil {
		return fmt.Errorf("journal patch %s: %w", rec.Job.PatchID, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("journal patch %s: %w", rec.Job.PatchID, err)
	}
	if d, err := os.Open(j.dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("journal patch %s: sync folder: %w", rec.Job.PatchID, err)
		}
	}
	return nil
}

// remove deletes a record and its step logs.
func (j *journal) remove(rec *record) error {
	if err := os.RemoveAll(j.logDir(rec.Job.PatchID, rec.Job.Attempt)); err != nil {
		return err
	}
	err := os.Remove(j.fileName(rec.Job.PatchID, rec.Job.Attempt))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// loadAll reads every record, oldest accepted first. A record that cannot
// be read is moved aside (name.corrupt) and logged, so one bad file does
// not stop the agent.
func (j *journal) loadAll(log *slog.Logger) ([]*record, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("read patch journal: %w", err)
	}
	var recs []*record
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".rec-") || strings.HasPrefix(name, ".download-") {
			os.Remove(filepath.Join(j.dir, name)) // a write or download cut short by a crash
			continue
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".json") {
			continue
		}
		path := filepath.Join(j.dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read patch journal: %w", err)
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil || rec.Job.PatchID == "" || rec.Job.Attempt < 1 {
			log.Error("patch journal record is unreadable; moved aside", "file", path, "err", err)
			_ = os.Rename(path, path+".corrupt")
			continue
		}
		recs = append(recs, &rec)
	}
	sortRecords(recs)
	return recs, nil
}

func sortRecords(recs []*record) {
	slices.SortStableFunc(recs, func(a, b *record) int { return a.AcceptedAt.Compare(b.AcceptedAt) })
}
