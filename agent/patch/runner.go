// Package patch is the ggagent's patch runner: it takes the patch jobs the
// broker dispatches to this core (shared/patchmsg), runs each against its
// client device over SSH or a serial console (patcher/sshtransport,
// patcher/serialtransport) and reports events and log chunks back.
//
// Guarantees:
//   - One patch per target at a time (a FIFO lane per device), and at most
//     Config.Concurrency patches (and probes) running at once.
//   - A durable journal: one JSON file per (patchId, attempt) under
//     <state-dir>/patches/, written atomically and fsynced on every state
//     change. After a restart a finished-but-unreported patch re-sends its
//     completed event, and a patch that was mid-step applies that step's
//     onInterrupt (fail → AGENT:Interrupted, rerun → the step runs again
//     and the patch goes on). A start for a (patchId, attempt) the journal
//     already knows is answered with its state and never runs twice.
//   - Secrets (credentials resolved from <state-dir>/credentials/, see
//     credstore) are redacted from every log chunk, step tail and event.
//   - Events go through the publisher's durable path (the MQTT outbox), so
//     they survive a broker outage; log chunks are best effort, in chunks of
//     at most patchmsg.MaxLogChunk bytes and at a bounded rate.
//
// Use in-process (daemon, e2e tests, benchmarks):
//
//	r, err := patch.New(patch.Config{StateDir: dir, CoreName: core, Publisher: pub})
//	defer r.Close()
//	r.HandleMessage(ctx, "patches/p1/start", payload) // or r.Handle(job), r.Cancel(c), r.Probe(p)
//
// Publisher is satisfied by *mqttclient.Client; topic suffixes are those of
// patchmsg (patches/{id}/events, …) relative to ggfleet/things/{core}/.
package patch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/agent/patch/credstore"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// Publisher sends the runner's messages to the broker.
type Publisher interface {
	// Publish is the durable path (events, probe results): the message is
	// kept until the broker acknowledges it, across outages and restarts.
	Publish(ctx context.Context, suffix string, payload []byte) error
	// PublishNow sends once on the current session or fails (log chunks,
	// which the broker tolerates losing).
	PublishNow(ctx context.Context, suffix string, payload []byte, retained bool) error
}

// Defaults for the zero values of Config.
const (
	DefaultConcurrency       = 16
	DefaultMaxQueued         = 1000
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultLogChunksPerSec   = 20
	// journalRetention is how long finished, reported patches stay in the
	// journal (to answer duplicate starts and list them in hello).
	journalRetention = 7 * 24 * time.Hour
)

// Config is what a Runner needs; StateDir and Publisher are required.
type Config struct {
	// StateDir is the agent's state directory: the journal goes to
	// patches/, credentials are read from credentials/, tofu host keys are
	// recorded in known_hosts.
	StateDir string
	// CoreName is this core's thing name; a job whose target names another
	// core is rejected UNKNOWN_TARGET. Empty skips the check.
	CoreName  string
	Publisher Publisher
	// Concurrency bounds patches and probes running at once (default 16).
	Concurrency int
	// MaxQueued bounds accepted patches waiting for their turn (default
	// 1000); more are rejected BUSY.
	MaxQueued int
	// HeartbeatInterval is how often a running patch reports (default 30s).
	HeartbeatInterval time.Duration
	// LogChunksPerSec bounds the log chunks one patch sends (default 20,
	// i.e. at most 160 KiB/s); output beyond what the buffer holds is
	// dropped from the stream (with a note), never from the step tails.
	LogChunksPerSec int
	// HTTPClient downloads url file sources (default: 10-minute timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// key names one patch attempt.
type key struct {
	patchID string
	attempt int
}

// Runner runs patch jobs. Create it with New; Close stops it.
type Runner struct {
	cfg        Config
	log        *slog.Logger
	creds      *credstore.Store
	journal    *journal
	knownHosts string

	ctx  context.Context
	stop context.CancelCauseFunc
	wg   sync.WaitGroup
	sem  chan struct{}

	mu          sync.Mutex
	closed      bool
	jobs        map[key]*jobState
	lanes       map[string]*lane
	queued      int
	inFlight    int
	maxInFlight int
}

// lane is one target's FIFO; at most one worker drains it.
type lane struct {
	items   []laneItem
	working bool
}

// laneItem is a patch attempt or a probe waiting for its target.
type laneItem struct {
	job   *jobState
	probe *patchmsg.ProbeRequest
}

// errShutdown is the cause of the runner's context when Close is called:
// jobs stop where they are and the journal keeps them for the next start.
var errShutdown = errors.New("patch runner shutting down")

// errCancelled is a job's cancel cause when the broker cancels it.
var errCancelled = errors.New("patch cancelled")

// New opens the journal, re-sends completions a previous run did not get
// out, and queues the patches it left unfinished (they resume or report
// AGENT:Interrupted per their step's onInterrupt).
func New(cfg Config) (*Runner, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("patch runner: state directory is required")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("patch runner: publisher is required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.LogChunksPerSec <= 0 {
		cfg.LogChunksPerSec = DefaultLogChunksPerSec
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Minute}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	j, err := openJournal(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancelCause(context.Background())
	r := &Runner{
		cfg: cfg, log: cfg.Logger, creds: credstore.New(cfg.StateDir), journal: j,
		knownHosts: knownHostsPath(cfg.StateDir),
		ctx:        ctx, stop: stop, sem: make(chan struct{}, cfg.Concurrency),
		jobs: map[key]*jobState{}, lanes: map[string]*lane{},
	}
	recs, err := j.loadAll(r.log)
	if err != nil {
		stop(errShutdown)
		return nil, err
	}
	now := time.Now()
	r.mu.Lock() // workers start as soon as a patch is queued
	defer r.mu.Unlock()
	defer r.pruneLocked(now)
	for _, rec := range recs {
		if rec.State == stateFinished && rec.Reported && now.Sub(rec.UpdatedAt) > journalRetention {
			if err := j.remove(rec); err != nil {
				r.log.Warn("could not prune an old patch record", "patchId", rec.Job.PatchID, "err", err)
			}
			continue
		}
		if rec.State == stateFinished {
			rec.slim()
		}
		js := r.newJobState(rec)
		r.jobs[js.key()] = js
		switch rec.State {
		case stateFinished:
			if !rec.Reported {
				r.log.Info("re-sending the completion of a patch finished before the restart", "patchId", rec.Job.PatchID, "attempt", rec.Job.Attempt)
				js.reportCompleted(ctx)
			}
		default:
			r.log.Info("resuming a patch left unfinished by the previous run", "patchId", rec.Job.PatchID, "attempt", rec.Job.Attempt, "state", rec.State)
			r.enqueueLocked(rec.Job.DeviceID, laneItem{job: js})
		}
	}
	return r, nil
}

// Close stops every worker and waits for them. Running patches are
// interrupted where they are (the remote command is killed); their journal
// records stay, so the next New resumes or fails them per onInterrupt.
func (r *Runner) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.stop(errShutdown)
	r.wg.Wait()
	return nil
}

// HandleMessage decodes and handles one message the agent received on
// ggfleet/things/{core}/{suffix}: patches/{id}/start, patches/{id}/cancel
// or targets/{deviceId}/probe. Anything else is logged and ignored.
func (r *Runner) HandleMessage(ctx context.Context, suffix string, payload []byte) {
	kind, id, verb, ok := patchmsg.ParseSuffix(suffix)
	switch {
	case !ok:
		r.log.Warn("ignoring a message on an unexpected patch topic", "topic", suffix)
	case kind == patchmsg.TopicPatches && verb == "start":
		job, err := patchmsg.Decode[patchmsg.Job](payload)
		if err == nil && job.PatchID != id {
			err = fmt.Errorf("patchId %q differs from the topic's %q", job.PatchID, id)
		}
		r.start(job, id, payload, err)
	case kind == patchmsg.TopicPatches && verb == "cancel":
		r.HandleCancel(ctx, payload)
	case kind == patchmsg.TopicTargets && verb == "probe":
		p, err := patchmsg.Decode[patchmsg.ProbeRequest](payload)
		if err != nil {
			r.log.Warn("ignoring a probe that does not decode", "deviceId", id, "err", err)
			return
		}
		if p.DeviceID == "" {
			p.DeviceID = id
		}
		r.Probe(p)
	default:
		r.log.Debug("ignoring patch topic", "topic", suffix)
	}
}

// HandleStart handles the payload of patches/{id}/start (a Job); it fits
// mqttclient.Client.Subscribe, whose handlers do not see the topic.
func (r *Runner) HandleStart(_ context.Context, payload []byte) {
	job, err := patchmsg.Decode[patchmsg.Job](payload)
	r.start(job, job.PatchID, payload, err)
}

// HandleCancel handles the payload of patches/{id}/cancel (a Cancel).
func (r *Runner) HandleCancel(_ context.Context, payload []byte) {
	c, err := patchmsg.Decode[patchmsg.Cancel](payload)
	if err != nil {
		r.log.Warn("ignoring a cancel that does not decode", "err", err)
		return
	}
	r.Cancel(c)
}

// HandleProbe handles the payload of targets/{deviceId}/probe.
func (r *Runner) HandleProbe(_ context.Context, payload []byte) {
	p, err := patchmsg.Decode[patchmsg.ProbeRequest](payload)
	if err != nil {
		r.log.Warn("ignoring a probe that does not decode", "err", err)
		return
	}
	if p.DeviceID == "" {
		p.DeviceID = p.Target.DeviceID
	}
	if p.DeviceID == "" {
		r.log.Warn("ignoring a probe that names no device", "probeId", p.ProbeID)
		return
	}
	r.Probe(p)
}

// start handles a decoded start, or rejects it BAD_JOB with what can be
// read of it so the broker can fail the patch.
func (r *Runner) start(job patchmsg.Job, patchID string, payload []byte, err error) {
	if err == nil {
		r.Handle(job)
		return
	}
	var partial struct {
		PatchID string `json:"patchId"`
		Attempt int    `json:"attempt"`
	}
	_ = json.Unmarshal(payload, &partial)
	if patchID == "" {
		patchID = partial.PatchID
	}
	if patchID == "" {
		r.log.Warn("ignoring a patch job that names no patch", "err", err)
		return
	}
	r.log.Warn("rejecting a patch job that does not decode", "patchId", patchID, "err", err)
	r.reject(patchID, max(partial.Attempt, 1), patchmsg.RejectBadJob, err)
}

// Handle accepts (or rejects) a patch job. It returns quickly: the job runs
// on the runner's workers. A job already in the journal is not run again:
// its state is reported instead. The runner keeps job: do not change it,
// or what its pointers reach, afterwards.
func (r *Runner) Handle(job patchmsg.Job) {
	k := key{job.PatchID, job.Attempt}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if js, ok := r.jobs[k]; ok {
		r.mu.Unlock()
		r.log.Info("duplicate patch start: reporting its state instead of running it again", "patchId", job.PatchID, "attempt", job.Attempt)
		js.reReport(r.ctx)
		return
	}
	r.mu.Unlock()

	plan, reason, err := r.check(job)
	if err != nil {
		r.log.Warn("rejecting patch job", "patchId", job.PatchID, "attempt", job.Attempt, "reason", reason, "err", err)
		r.reject(job.PatchID, job.Attempt, reason, err)
		return
	}
	_ = plan // the plan is rebuilt when the job runs; checking it here is what matters

	r.mu.Lock()
	if _, ok := r.jobs[k]; ok || r.closed { // raced with a duplicate or Close
		r.mu.Unlock()
		return
	}
	if r.queued >= r.cfg.MaxQueued {
		r.mu.Unlock()
		r.reject(job.PatchID, job.Attempt, patchmsg.RejectBusy, fmt.Errorf("%d patches are already waiting on this core", r.cfg.MaxQueued))
		return
	}
	now := time.Now().UTC()
	rec := &record{Version: 1, Job: job, State: stateQueued, AcceptedAt: now, UpdatedAt: now}
	js := r.newJobState(rec)
	r.jobs[k] = js
	r.queued++ // reserved now so BUSY holds; enqueueLocked counts it again
	r.pruneLocked(now)
	r.mu.Unlock()
	// Journaled (queued) and reported before any worker can touch it, so
	// accepted always comes first.
	js.emit(r.ctx, patchmsg.Event{Type: patchmsg.EventAccepted})
	r.mu.Lock()
	r.queued--
	if !r.closed { // else the journal keeps it queued for the next start
		r.enqueueLocked(job.DeviceID, laneItem{job: js})
	}
	r.mu.Unlock()
}

// Bounds on the finished patches remembered (memory and journal).
const maxFinished = 1000

// pruneLocked forgets finished, reported patches past the retention time
// or beyond the newest maxFinished. r.mu must be held.
func (r *Runner) pruneLocked(now time.Time) {
	var done []*jobState
	for _, js := range r.jobs {
		js.mu.Lock()
		if js.rec.State == stateFinished && js.rec.Reported {
			done = append(done, js)
		}
		js.mu.Unlock()
	}
	if len(done) <= maxFinished && (len(done) == 0 || now.Sub(oldest(done)) <= journalRetention) {
		return
	}
	slices.SortFunc(done, func(a, b *jobState) int { return a.rec.UpdatedAt.Compare(b.rec.UpdatedAt) })
	for i, js := range done {
		if i >= len(done)-maxFinished && now.Sub(js.rec.UpdatedAt) <= journalRetention {
			break
		}
		delete(r.jobs, js.key())
		if err := r.journal.remove(js.rec); err != nil {
			r.log.Warn("could not prune an old patch record", "patchId", js.rec.Job.PatchID, "err", err)
		}
	}
}

func oldest(jss []*jobState) time.Time {
	t := jss[0].rec.UpdatedAt
	for _, js := range jss[1:] {
		if js.rec.UpdatedAt.Before(t) {
			t = js.rec.UpdatedAt
		}
	}
	return t
}

// Cancel stops a queued or running patch attempt (Attempt 0: any attempt
// of the patch). It ends as failed with AGENT:Cancelled.
func (r *Runner) Cancel(c patchmsg.Cancel) {
	r.mu.Lock()
	var hits []*jobState
	for k, js := range r.jobs {
		if k.patchID == c.PatchID && (c.Attempt == 0 || c.Attempt == k.attempt) {
			hits = append(hits, js)
		}
	}
	var dequeued []*jobState
	for _, js := range hits {
		if l := r.lanes[js.rec.Job.DeviceID]; l != nil {
			for i, it := range l.items {
				if it.job == js {
					l.items = slices.Delete(l.items, i, i+1)
					r.queued--
					dequeued = append(dequeued, js)
					break
				}
			}
		}
	}
	r.mu.Unlock()
	if len(hits) == 0 {
		r.log.Info("cancel for a patch this core does not know; ignored", "patchId", c.PatchID, "attempt", c.Attempt)
		return
	}
	for _, js := range hits {
		if js.state() == stateFinished {
			js.reReport(r.ctx) // the broker missed the outcome
			continue
		}
		if slices.Contains(dequeued, js) {
			r.log.Info("patch cancelled before it started", "patchId", c.PatchID, "attempt", js.rec.Job.Attempt)
			js.finish(r.ctx, patchmsg.PatchFailed, "AGENT:Cancelled")
			continue
		}
		js.cancel(errCancelled)
	}
}

// Probe connects to a target, runs `uname -a` and publishes a ProbeResult.
// It waits its turn in the target's lane (a serial console is exclusive).
func (r *Runner) Probe(p patchmsg.ProbeRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	dev := p.DeviceID
	if dev == "" {
		dev = p.Target.DeviceID
	}
	r.enqueueLocked(dev, laneItem{probe: &p})
}

// Patches lists the patch attempts the journal holds, for the hello
// message (the broker re-dispatches those it expected and does not see).
func (r *Runner) Patches() []mqttmsg.PatchState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]mqttmsg.PatchState, 0, len(r.jobs))
	for k, js := range r.jobs {
		out = append(out, mqttmsg.PatchState{PatchID: k.patchID, Attempt: k.attempt, State: js.state()})
	}
	slices.SortFunc(out, func(a, b mqttmsg.PatchState) int {
		if a.PatchID != b.PatchID {
			if a.PatchID < b.PatchID {
				return -1
			}
			return 1
		}
		return a.Attempt - b.Attempt
	})
	return out
}

// Stats are the runner's counters, for status and tests.
type Stats struct {
	Queued      int // accepted patches waiting for their target or a slot
	InFlight    int // patches and probes running now
	MaxInFlight int // the most that ran at once since New
}

// Stats returns a snapshot of the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Queued: r.queued, InFlight: r.inFlight, MaxInFlight: r.maxInFlight}
}

// reject publishes a rejected event; rejected jobs are not journaled, so a
// re-dispatch is checked again (the operator may have added the credential).
func (r *Runner) reject(patchID string, attempt int, reason string, err error) {
	ev := patchmsg.Event{Version: patchmsg.Version, PatchID: patchID, Attempt: max(attempt, 1), Seq: 1,
		Type: patchmsg.EventRejected, TS: time.Now().UTC(), Reason: reason, StatusMessage: err.Error()}
	r.publishEvent(r.ctx, ev, nil)
}

// publishEvent redacts and sends an event on the durable path.
func (r *Runner) publishEvent(ctx context.Context, ev patchmsg.Event, red *redactor) {
	payload, err := encodeEvent(ev, red)
	if err != nil {
		r.log.Error("could not encode a patch event", "patchId", ev.PatchID, "type", ev.Type, "err", err)
		return
	}
	// The outbox write must happen even while shutting down.
	if ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	if err := r.cfg.Publisher.Publish(ctx, patchmsg.EventsTopic(ev.PatchID), payload); err != nil {
		r.log.Error("could not queue a patch event for the broker", "patchId", ev.PatchID, "type", ev.Type, "err", err)
	}
}

// enqueueLocked appends an item to the device's lane and starts its worker
// if none runs. r.mu must be held.
func (r *Runner) enqueueLocked(deviceID string, it laneItem) {
	l := r.lanes[deviceID]
	if l == nil {
		l = &lane{}
		r.lanes[deviceID] = l
	}
	l.items = append(l.items, it)
	if it.job != nil {
		r.queued++
	}
	if !l.working {
		l.working = true
		r.wg.Add(1)
		go r.work(deviceID, l)
	}
}

// work drains one lane, one item at a time, each holding a global slot.
func (r *Runner) work(deviceID string, l *lane) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if len(l.items) == 0 || r.ctx.Err() != nil {
			l.working = false
			if len(l.items) == 0 {
				delete(r.lanes, deviceID)
			}
			r.mu.Unlock()
			return
		}
		it := l.items[0]
		r.mu.Unlock()

		select {
		case r.sem <- struct{}{}:
		case <-r.ctx.Done():
			r.mu.Lock()
			l.working = false
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		// A cancel may have removed the item while we waited for a slot.
		if len(l.items) == 0 || l.items[0] != it {
			r.mu.Unlock()
			<-r.sem
			continue
		}
		l.items = l.items[1:]
		if it.job != nil {
			r.queued--
		}
		r.inFlight++
		r.maxInFlight = max(r.maxInFlight, r.inFlight)
		r.mu.Unlock()

		if it.job != nil {
			r.execute(it.job)
		} else {
			r.probe(*it.probe)
		}

		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
		<-r.sem
	}
}
