package patches

import (
	"context"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// HandleMessage routes what a core's agent sent on a patch or target topic
// (the suffix after ggfleet/things/{core}/): events, log chunks and probe
// results. Messages that do not decode, or that the broker sends itself,
// are errkind.Invalid.
func (s *Service) HandleMessage(ctx context.Context, core, suffix string, payload []byte) error {
	kind, id, verb, ok := patchmsg.ParseSuffix(suffix)
	if !ok {
		return invalid("%q is not a patch or target topic", suffix)
	}
	switch {
	case kind == patchmsg.TopicPatches && verb == "events":
		ev, err := patchmsg.Decode[patchmsg.Event](payload)
		if err != nil {
			return errkind.Wrap(errkind.Invalid, err, "patch event: %v", err)
		}
		if ev.PatchID != id {
			return invalid("patch event for %s on the topic of %s", ev.PatchID, id)
		}
		return s.HandleEvent(ctx, core, ev)
	case kind == patchmsg.TopicPatches && verb == "logs":
		c, err := patchmsg.Decode[patchmsg.LogChunk](payload)
		if err != nil {
			return errkind.Wrap(errkind.Invalid, err, "patch log chunk: %v", err)
		}
		if c.PatchID != id {
			return invalid("log chunk for %s on the topic of %s", c.PatchID, id)
		}
		return s.HandleLog(ctx, core, c)
	case kind == patchmsg.TopicTargets && verb == "probe/result":
		r, err := patchmsg.Decode[patchmsg.ProbeResult](payload)
		if err != nil {
			return errkind.Wrap(errkind.Invalid, err, "probe result: %v", err)
		}
		return s.HandleProbeResult(ctx, core, id, r)
	}
	return invalid("%q is sent by the broker, not by an agent", suffix)
}

// HandleEvent applies an agent's event to its patch, once: events of other
// attempts, repeated or older sequence numbers, events from a core the
// patch was not sent to and events for finished patches are ignored.
func (s *Service) HandleEvent(ctx context.Context, core string, ev patchmsg.Event) error {
	var ignored string
	p, changed, err := s.update(ctx, ev.PatchID, func(p *Patch) (bool, error) {
		switch {
		case p.CoreName != core:
			ignored = "from a core the patch was not sent to"
		case ev.Attempt != p.Attempt:
			ignored = "of another attempt"
		case ev.Seq < p.Seq:
			ignored = "already applied"
		case p.Final():
			ignored = "the patch already ended"
		case p.DispatchedAt.IsZero():
			ignored = "the attempt was not dispatched"
		}
		if ignored != "" {
			return false, nil
		}
		now := s.now()
		p.Seq, p.LastEventAt = ev.Seq+1, now
		applyEvent(p, ev, now)
		return true, nil
	})
	if errkind.Is(err, errkind.NotFound) {
		s.log.Info("event of an unknown patch: ignored", "thing", core, "patchId", ev.PatchID)
		return nil
	}
	if err != nil {
		return err
	}
	if !changed {
		s.log.Debug("patch event ignored", "thing", core, "patchId", ev.PatchID, "attempt", ev.Attempt, "seq", ev.Seq, "type", ev.Type, "why", ignored)
		return nil
	}
	if p.Final() {
		s.log.Info("patch finished", "patchId", p.PatchID, "taskId", p.TaskID, "device", p.DeviceID, "status", p.PatchStatus, "statusMessage", p.StatusMessage)
		s.wake()
	}
	if p.NotBefore.After(s.now()) {
		s.wake()
	}
	return nil
}

// applyEvent maps an event onto the patch (§6.5): accepted → pending
// AGENT:InProgress, step-started → AGENT:InProgress:i/n:step, completed →
// success or failed with the agent's status message; a BUSY rejection puts
// the patch back in the queue for a while, other rejections fail it.
func applyEvent(p *Patch, ev patchmsg.Event, now time.Time) {
	running := func() {
		if p.PatchStatus != patchmsg.PatchPending {
			p.PatchStatus, p.StatusMessage = patchmsg.PatchPending, MsgInProgress
		}
	}
	switch ev.Type {
	case patchmsg.EventAccepted:
		p.PatchStatus, p.StatusMessage = patchmsg.PatchPending, MsgInProgress
	case patchmsg.EventRejected:
		if ev.Reason == patchmsg.RejectBusy {
			// Back to the queue: the next dispatch is a new delivery
			// of the same attempt, so its events start a new sequence.
			p.DispatchedAt, p.NotBefore, p.Seq = time.Time{}, now.Add(busyDelay), 0
			p.StatusMessage = "AGENT:Rejected:" + ev.Reason
			return
		}
		p.PatchStatus, p.StatusMessage = patchmsg.PatchFailed, "AGENT:Rejected:"+ev.Reason
	case patchmsg.EventStepStarted, patchmsg.EventStepFinished:
		running()
		if ev.Step != nil {
			setStep(p, *ev.Step)
			if ev.Type == patchmsg.EventStepStarted {
				p.StatusMessage = fmt.Sprintf("%s:%d/%d:%s", MsgInProgress, ev.Step.Index+1, len(p.Steps), ev.Step.Name)
			}
		}
	case patchmsg.EventCompleted:
		p.PatchStatus, p.StatusMessage = ev.Status, ev.StatusMessage
		if p.StatusMessage == "" {
			p.StatusMessage = MsgSuccess
			if ev.Status == patchmsg.PatchFailed {
				p.StatusMessage = MsgFailed
			}
		}
	default: // connected, file, heartbeat and types added later
		running()
	}
}

// setStep stores a step result at its index, growing the list if the job
// had more steps than the broker recorded.
func setStep(p *Patch, r patchmsg.StepResult) {
	if r.Index < 0 || r.Index > 1000 {
		return
	}
	for len(p.Steps) <= r.Index {
		p.Steps = append(p.Steps, patchmsg.StepResult{Index: len(p.Steps), Status: patchmsg.StepPending})
	}
	p.Steps[r.Index] = r
}

// HandleLog stores a log chunk of a patch's current attempt (bounded per
// step and stream, keeping the tail); chunks of other attempts, other
// cores or unknown patches are dropped.
func (s *Service) HandleLog(ctx context.Context, core string, c patchmsg.LogChunk) error {
	p, err := s.cfg.Store.GetPatch(ctx, c.PatchID)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.CoreName != core || c.Attempt != p.Attempt {
		s.log.Debug("log chunk ignored", "thing", core, "patchId", c.PatchID, "attempt", c.Attempt)
		return nil
	}
	if c.Data == "" {
		return nil
	}
	return s.cfg.Store.AppendPatchLog(ctx, LogChunk{PatchID: c.PatchID, Attempt: c.Attempt, Step: c.Step, Stream: c.Stream,
		Seq: c.Seq, Data: c.Data, ReceivedAt: s.now()}, LogLimit)
}
