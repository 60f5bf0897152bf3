package patch

import (
	"context"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// jobState is one patch attempt in memory: its journal record, the event
// sequence, and how to cancel it while it runs. mu orders events: each is
// numbered, journaled and queued for the broker under it.
type jobState struct {
	r *Runner

	mu        sync.Mutex
	rec       *record
	red       *redactor
	cancelFn  context.CancelCauseFunc
	cancelled bool
}

func (r *Runner) newJobState(rec *record) *jobState { return &jobState{r: r, rec: rec} }

func (js *jobState) key() key { return key{js.rec.Job.PatchID, js.rec.Job.Attempt} }

func (js *jobState) state() string {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.rec.State
}

// update changes the record and journals it.
func (js *jobState) update(fn func(rec *record)) {
	js.mu.Lock()
	defer js.mu.Unlock()
	fn(js.rec)
	js.saveLocked()
}

func (js *jobState) saveLocked() {
	if err := js.r.journal.save(js.rec); err != nil {
		js.r.log.Error("could not journal patch state", "patchId", js.rec.Job.PatchID, "err", err)
	}
}

// emit numbers an event, journals the new sequence and queues the event.
func (js *jobState) emit(ctx context.Context, ev patchmsg.Event) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.emitLocked(ctx, &ev)
}

func (js *jobState) emitLocked(ctx context.Context, ev *patchmsg.Event) {
	js.rec.Seq++
	ev.Version = patchmsg.Version
	ev.PatchID, ev.Attempt, ev.Seq = js.rec.Job.PatchID, js.rec.Job.Attempt, js.rec.Seq
	ev.TS = time.Now().UTC()
	js.saveLocked()
	js.r.publishEvent(ctx, *ev, js.red)
}

// finish records the outcome and reports the completed event. The record
// is journaled finished before the event is queued, and marked reported
// after, so a crash in between re-sends it on the next start.
func (js *jobState) finish(ctx context.Context, status, message string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.rec.State == stateFinished {
		return
	}
	js.rec.State = stateFinished
	js.rec.StepRunning = false
	js.rec.Seq++
	ev := patchmsg.Event{Version: patchmsg.Version, PatchID: js.rec.Job.PatchID, Attempt: js.rec.Job.Attempt,
		Seq: js.rec.Seq, Type: patchmsg.EventCompleted, TS: time.Now().UTC(),
		Status: status, StatusMessage: js.red.string(message)}
	js.rec.Completed = &ev
	js.saveLocked()
	js.r.publishEvent(ctx, ev, js.red)
	js.rec.Reported = true
	js.saveLocked()
	js.rec.slim() // the journal keeps the full record; memory only what duplicates need
	js.r.log.Info("patch finished", "patchId", ev.PatchID, "attempt", ev.Attempt, "status", status, "statusMessage", ev.StatusMessage)
}

// reportCompleted re-sends the journaled completed event (same seq).
func (js *jobState) reportCompleted(ctx context.Context) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.rec.Completed == nil {
		return
	}
	js.r.publishEvent(ctx, *js.rec.Completed, js.red)
	if !js.rec.Reported {
		js.rec.Reported = true
		js.saveLocked()
	}
}

// reReport answers a duplicate start: the completion again if finished,
// else a fresh accepted (queued) or heartbeat (running) event.
func (js *jobState) reReport(ctx context.Context) {
	js.mu.Lock()
	defer js.mu.Unlock()
	switch js.rec.State {
	case stateFinished:
		if js.rec.Completed != nil {
			js.r.publishEvent(ctx, *js.rec.Completed, js.red)
		}
	case stateQueued:
		js.emitLocked(ctx, &patchmsg.Event{Type: patchmsg.EventAccepted})
	default:
		js.emitLocked(ctx, &patchmsg.Event{Type: patchmsg.EventHeartbeat})
	}
}

// cancel stops the attempt if it runs, or marks it so it stops as soon
// as it starts.
func (js *jobState) cancel(cause error) {
	js.mu.Lock()
	js.cancelled = true
	fn := js.cancelFn
	js.mu.Unlock()
	if fn != nil {
		fn(cause)
	}
}
