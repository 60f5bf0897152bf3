package patch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// errDeadline is a job's cancel cause when the job's deadline passes.
var errDeadline = errors.New("patch deadline passed")

// execution is one run of a patch attempt.
type execution struct {
	r    *Runner
	js   *jobState
	plan *plan
	cred []byte
	logs *logSender // nil when the job asked for no log streaming
	tr   patcher.Transport
}

// execute runs (or resumes) a patch attempt until it finishes, is
// cancelled, or the runner shuts down (then the journal keeps it).
func (r *Runner) execute(js *jobState) {
	ctx, cancel := context.WithCancelCause(r.ctx)
	defer cancel(nil)
	js.mu.Lock()
	if js.cancelled {
		js.mu.Unlock()
		js.finish(r.ctx, patchmsg.PatchFailed, "AGENT:Cancelled")
		return
	}
	js.cancelFn = cancel
	job := js.rec.Job
	js.mu.Unlock()
	defer func() {
		js.mu.Lock()
		js.cancelFn = nil
		js.mu.Unlock()
	}()
	if !job.Deadline.IsZero() {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, job.Deadline, errDeadline)
		defer stop()
	}
	log := r.log.With("patchId", job.PatchID, "attempt", job.Attempt, "deviceId", job.DeviceID)

	p, reason, err := r.check(job)
	if err != nil {
		// The job passed this check when accepted: the credential was deleted
		// or the core renamed since.
		log.Warn("patch can no longer run", "reason", reason, "err", err)
		js.finish(r.ctx, patchmsg.PatchFailed, "AGENT:Transport:"+reason)
		return
	}
	cred, err := r.credential(job.Target)
	if err != nil {
		js.finish(r.ctx, patchmsg.PatchFailed, "AGENT:Transport:"+codeCredential)
		return
	}
	js.mu.Lock()
	js.red = newRedactor(cred)
	rec := js.rec
	resumed := rec.State == stateRunning
	interrupted := resumed && rec.StepRunning
	js.mu.Unlock()

	x := &execution{r: r, js: js, plan: p, cred: cred}
	if interrupted {
		i := rec.NextStep
		if i < len(p.steps) && p.steps[i].onInterrupt != patchmsg.OnInterruptRerun {
			log.Warn("patch was interrupted mid-step by an agent restart; the step's onInterrupt is fail", "step", p.steps[i].name)
			now := time.Now().UTC()
			res := x.stepResult(i)
			res.Status, res.Error, res.FinishedAt = patchmsg.StepFailed, codeInterrupted, &now
			x.recordStep(ctx, res, false)
			x.skipFrom(ctx, i+1)
			js.finish(r.ctx, patchmsg.PatchFailed, "AGENT:Interrupted")
			return
		}
		log.Info("patch was interrupted mid-step by an agent restart; running the step again (onInterrupt rerun)", "step", p.steps[min(i, len(p.steps)-1)].name)
	}
	js.update(func(rec *record) {
		rec.State = stateRunning
		if resumed {
			// Chunks sent after the last journaled number may be reused:
			// jump past them.
			rec.LogSeq += 1 << 20
		}
	})

	// Heartbeats and log streaming live as long as this execution.
	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(ctx)
	defer func() {
		stopBG()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
				js.emit(bg, patchmsg.Event{Type: patchmsg.EventHeartbeat})
			}
		}
	}()
	if job.Report.Logs != "none" {
		x.logs = newLogSender(r.cfg.Publisher, job.PatchID, job.Attempt, r.cfg.LogChunksPerSec, rec.LogSeq)
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.logs.run(bg)
		}()
	}
	defer func() {
		if x.tr != nil {
			x.tr.Close()
		}
	}()

	status, message := x.run(ctx)
	// No heartbeat may follow the completed event.
	stopBG()
	wg.Wait()
	if status == "" { // stopped by the context
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errShutdown):
			log.Info("patch interrupted by agent shutdown; it resumes on the next start")
			return
		case errors.Is(cause, errCancelled):
			status, message = patchmsg.PatchFailed, "AGENT:Cancelled"
		case errors.Is(cause, errDeadline):
			status, message = patchmsg.PatchFailed, "AGENT:TimedOut:"+x.currentStep()
		default:
			status, message = patchmsg.PatchFailed, "AGENT:Cancelled"
		}
	}
	js.finish(r.ctx, status, message)
}

// currentStep names the step in progress (or "deadline" before any).
func (x *execution) currentStep() string {
	x.js.mu.Lock()
	i := x.js.rec.NextStep
	x.js.mu.Unlock()
	if i < len(x.plan.steps) {
		return x.plan.steps[i].name
	}
	return "deadline"
}

// run connects, places files and runs the steps. It returns the patch
// status and statusMessage, or "" when ctx ended (see execute).
func (x *execution) run(ctx context.Context) (status, message string) {
	js, p := x.js, x.plan
	js.mu.Lock()
	filesDone, start := js.rec.FilesDone, js.rec.NextStep
	js.mu.Unlock()
	if msg := x.connect(ctx, time.Now().Add(connectWindow(p.job.Target))); msg != "" {
		if ctx.Err() != nil {
			return "", ""
		}
		x.skipFrom(ctx, start)
		return patchmsg.PatchFailed, msg
	}
	if !filesDone {
		if msg := x.placeFiles(ctx); msg != "" {
			if ctx.Err() != nil {
				return "", ""
			}
			x.skipFrom(ctx, start)
			return patchmsg.PatchFailed, msg
		}
		js.update(func(rec *record) { rec.FilesDone = true })
	}
	failMsg := ""
	for i := start; i < len(p.steps); i++ {
		ok, msg, stopped := x.runStep(ctx, i)
		if stopped {
			return "", ""
		}
		if !ok && !p.steps[i].continueOnError {
			x.skipFrom(ctx, i+1)
			failMsg = msg
			break
		}
	}
	if failMsg != "" {
		return patchmsg.PatchFailed, failMsg
	}
	if p.defaultWorkdir {
		// Best effort: the agent made this directory, so it removes it.
		_, _ = x.tr.Run(ctx, patcher.Command{Script: "rm -rf " + patcher.ShellQuote(p.workdir), Become: p.become, Timeout: time.Minute})
	}
	return patchmsg.PatchSuccess, "AGENT:Success"
}

func connectWindow(t patchmsg.Target) time.Duration {
	if s := t.Connection.ConnectTimeoutSeconds; s > 0 {
		return 3 * time.Duration(s) * time.Second
	}
	return 45 * time.Second
}

// connect dials the target (retrying while unreachable until until) and
// reports connected. It returns a statusMessage on failure.
func (x *execution) connect(ctx context.Context, until time.Time) string {
	tr, fp, err := x.r.dialRetry(ctx, x.plan.job.Target, x.cred, until)
	if err != nil {
		x.r.log.Warn("could not connect to the target", "patchId", x.plan.job.PatchID, "deviceId", x.plan.job.DeviceID, "err", x.js.red.string(err.Error()))
		code := transportCode(err)
		if code == codeConnLost {
			code = codeUnreachable
		}
		return "AGENT:Transport:" + code
	}
	x.tr = tr
	x.js.emit(ctx, patchmsg.Event{Type: patchmsg.EventConnected, HostKeyFingerprint: fp})
	return ""
}

// reconnect replaces a lost (or deliberately dropped) session.
func (x *execution) reconnect(ctx context.Context, within time.Duration) string {
	if x.tr != nil {
		x.tr.Close()
		x.tr = nil
	}
	return x.connect(ctx, time.Now().Add(within))
}

// placeFiles makes the workdir and puts every file in place.
func (x *execution) placeFiles(ctx context.Context) string {
	p := x.plan
	// One command makes the workdir and every file's folder: each command
	// costs a round trip (and a session over SSH).
	mk := "mkdir -p " + patcher.ShellQuote(p.workdir)
	viaSudo := p.become && p.user != "root"
	if viaSudo && p.user != "" {
		mk += " && chown " + patcher.ShellQuote(p.user) + " " + patcher.ShellQuote(p.workdir)
	}
	var dirs []string
	for _, f := range p.files {
		if d := path.Dir(f.path); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) > 0 {
		mk += " && mkdir -p"
		for _, d := range dirs {
			mk += " " + patcher.ShellQuote(d)
		}
	}
	if msg := x.shell(ctx, mk, p.become, "workdir"); msg != "" {
		return msg
	}
	for i, f := range p.files {
		n, sum, err := x.placeFile(ctx, i, f)
		x.js.emit(ctx, patchmsg.Event{Type: patchmsg.EventFile, File: &patchmsg.FileResult{Path: f.path, Bytes: n, SHA256: sum, OK: err == nil}})
		if err != nil {
			x.r.log.Warn("could not place a file on the target", "patchId", p.job.PatchID, "path", f.path, "err", x.js.red.string(err.Error()))
			var de downloadError
			if errors.As(err, &de) {
				return "AGENT:Transport:" + codeDownload
			}
			if code := transportCode(err); code != codeError {
				return "AGENT:Transport:" + code
			}
			return "AGENT:Transport:" + codeFile
		}
	}
	return ""
}

// shell runs a short housekeeping command and turns failure into a
// statusMessage.
func (x *execution) shell(ctx context.Context, script string, become bool, what string) string {
	var stderr bytes.Buffer
	res, err := x.tr.Run(ctx, patcher.Command{Script: script, Become: become, Stderr: &stderr, Timeout: 2 * time.Minute})
	if err != nil {
		return "AGENT:Transport:" + transportCode(err)
	}
	if res.ExitCode != 0 {
		x.r.log.Warn("housekeeping command failed on the target", "patchId", x.plan.job.PatchID, "what", what, "exit", res.ExitCode, "stderr", x.js.red.string(strings.TrimSpace(stderr.String())))
		return "AGENT:Failed:" + what + ":exit=" + strconv.Itoa(res.ExitCode)
	}
	return ""
}

// downloadError marks a failed url download or checksum of a source.
type downloadError struct{ error }

func (x *execution) placeFile(ctx context.Context, i int, f planFile) (int64, string, error) {
	p := x.plan
	q := patcher.ShellQuote
	if f.pull {
		script := "set -e\nt=" + q(f.path+".ggpatch-pull") + "\n" +
			"if command -v curl >/dev/null 2>&1; then curl -fsSL -o \"$t\" " + q(f.url) + "; else wget -q -O \"$t\" " + q(f.url) + "; fi\n" +
			"s=$(sha256sum \"$t\" | cut -d' ' -f1)\n" +
			"if [ \"$s\" != " + q(f.sha256) + " ]; then rm -f \"$t\"; echo \"sha256 $s differs from the expected " + f.sha256 + "\" >&2; exit 3; fi\n" +
			"chmod " + fmt.Sprintf("%o", f.mode) + " \"$t\"\n"
		if f.owner != "" {
			script += "chown " + q(f.owner) + " \"$t\"\n"
		}
		script += "mv -f \"$t\" " + q(f.path) + "\nwc -c < " + q(f.path) + "\n"
		var out, stderr bytes.Buffer
		res, err := x.tr.Run(ctx, patcher.Command{Script: script, Become: p.become, Stdout: &out, Stderr: &stderr, Timeout: 30 * time.Minute})
		if err != nil {
			return 0, "", err
		}
		if res.ExitCode != 0 {
			return 0, "", downloadError{fmt.Errorf("device could not pull %s (exit %d): %s", f.url, res.ExitCode, strings.TrimSpace(stderr.String()))}
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
		return n, f.sha256, nil
	}

	src, err := x.source(ctx, f)
	if err != nil {
		return 0, "", err
	}
	defer src.close()
	dst := f.path
	viaSudo := p.become && p.user != "root"
	if viaSudo {
		dst = path.Join(p.workdir, ".file-"+strconv.Itoa(i))
	}
	if err := x.tr.Upload(ctx, patcher.File{Path: dst, Mode: f.mode, Data: src.r, Size: src.size, SHA256: src.sha256}); err != nil {
		return 0, "", err
	}
	var fix []string
	if viaSudo {
		fix = append(fix, "mv -f "+q(dst)+" "+q(f.path), fmt.Sprintf("chmod %o %s", f.mode, q(f.path)))
	}
	if f.owner != "" {
		fix = append(fix, "chown "+q(f.owner)+" "+q(f.path))
	}
	if len(fix) > 0 {
		if msg := x.shell(ctx, strings.Join(fix, " && "), p.become, "file"); msg != "" {
			return 0, "", fmt.Errorf("place %s: %s", f.path, msg)
		}
	}
	return src.size, src.sha256, nil
}

// maxDownload bounds a url source the agent fetches (to a temporary file
// in the journal folder, streamed from there to the device).
const maxDownload = 1 << 30

// fileSource is a file's bytes, ready to upload.
type fileSource struct {
	r      io.Reader
	size   int64
	sha256 string
	close  func()
}

// source returns a file's bytes: inline, or downloaded to a temporary file
// and checked against the declared sha256 (rendered first if a template).
func (x *execution) source(ctx context.Context, f planFile) (fileSource, error) {
	if f.url == "" {
		return memSource(f.data), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return fileSource{}, downloadError{err}
	}
	resp, err := x.r.cfg.HTTPClient.Do(req)
	if err != nil {
		return fileSource{}, downloadError{fmt.Errorf("download %s: %w", redactURL(f.url), err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fileSource{}, downloadError{fmt.Errorf("download %s: HTTP %s", redactURL(f.url), resp.Status)}
	}
	tmp, err := os.CreateTemp(x.r.journal.dir, ".download-*")
	if err != nil {
		return fileSource{}, fmt.Errorf("download %s: %w", redactURL(f.url), err)
	}
	cleanup := func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(resp.Body, maxDownload+1))
	if err == nil && n > maxDownload {
		err = fmt.Errorf("over %d bytes; use transfer pull for big files", int64(maxDownload))
	}
	if err != nil {
		cleanup()
		return fileSource{}, downloadError{fmt.Errorf("download %s: %w", redactURL(f.url), err)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.sha256 {
		cleanup()
		return fileSource{}, downloadError{fmt.Errorf("download %s: sha256 %s, expected %s", redactURL(f.url), got, f.sha256)}
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return fileSource{}, err
	}
	if f.render {
		defer cleanup()
		text, err := io.ReadAll(tmp)
		if err != nil {
			return fileSource{}, err
		}
		s, err := render(f.path, string(text), x.templateData())
		if err != nil {
			return fileSource{}, err
		}
		return memSource([]byte(s)), nil
	}
	return fileSource{r: tmp, size: n, sha256: f.sha256, close: cleanup}, nil
}

func memSource(b []byte) fileSource {
	sum := sha256.Sum256(b)
	return fileSource{r: bytes.NewReader(b), size: int64(len(b)), sha256: hex.EncodeToString(sum[:]), close: func() {}}
}

// redactURL drops the query (presigned URLs carry signatures there).
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

func (x *execution) templateData() *tmplData { return x.plan.data }

// stepResult is step i's result so far (from the journal, or fresh).
func (x *execution) stepResult(i int) patchmsg.StepResult {
	x.js.mu.Lock()
	defer x.js.mu.Unlock()
	if i < len(x.js.rec.Steps) && x.js.rec.Steps[i].Name != "" {
		return x.js.rec.Steps[i]
	}
	return patchmsg.StepResult{Index: i, Name: x.plan.steps[i].name, Status: patchmsg.StepPending}
}

// recordStep journals step i's result and reports it (step-started when
// started, else step-finished).
func (x *execution) recordStep(ctx context.Context, res patchmsg.StepResult, started bool) {
	js := x.js
	js.mu.Lock()
	defer js.mu.Unlock()
	for len(js.rec.Steps) <= res.Index {
		js.rec.Steps = append(js.rec.Steps, patchmsg.StepResult{})
	}
	js.rec.Steps[res.Index] = res
	if started {
		js.rec.NextStep, js.rec.StepRunning = res.Index, true
	} else {
		js.rec.NextStep, js.rec.StepRunning = res.Index+1, false
	}
	if x.logs != nil {
		js.rec.LogSeq = x.logs.lastSeq()
	}
	typ := patchmsg.EventStepFinished
	if started {
		typ = patchmsg.EventStepStarted
	}
	js.emitLocked(ctx, &patchmsg.Event{Type: typ, Step: &res})
}

// skipFrom reports the steps from i on as skipped.
func (x *execution) skipFrom(ctx context.Context, i int) {
	for ; i < len(x.plan.steps); i++ {
		res := x.stepResult(i)
		res.Status = patchmsg.StepSkipped
		x.recordStep(ctx, res, false)
	}
}

// runStep runs step i with its retries. ok says the step succeeded (as
// judged by expectExitCodes); msg is the patch statusMessage if the patch
// fails here; stopped says ctx ended.
func (x *execution) runStep(ctx context.Context, i int) (ok bool, msg string, stopped bool) {
	s := x.plan.steps[i]
	started := time.Now().UTC()
	res := patchmsg.StepResult{Index: i, Name: s.name, Status: patchmsg.StepRunning, StartedAt: &started}
	x.recordStep(ctx, res, true)

	outLog, errLog := x.openStepLog(i, patchmsg.StreamStdout), x.openStepLog(i, patchmsg.StreamStderr)
	defer outLog.close()
	defer errLog.close()
	var outTail, errTail *tail
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		outTail, errTail = &tail{max: s.maxOutput}, &tail{max: s.maxOutput}
		stdout := x.stream(i, patchmsg.StreamStdout, outTail, outLog)
		stderr := x.stream(i, patchmsg.StreamStderr, errTail, errLog)
		var r patcher.Result
		var err error
		if x.tr == nil {
			err = fmt.Errorf("not connected: %w", patcher.ErrConnLost)
		} else {
			r, err = x.tr.Run(ctx, patcher.Command{Script: s.script, Env: s.env, Dir: s.dir, Become: s.become,
				Timeout: s.timeout, Stdout: stdout, Stderr: stderr})
		}
		stdout.Flush()
		stderr.Flush()
		if ctx.Err() != nil {
			if x.logs != nil {
				x.logs.endStep(context.WithoutCancel(ctx), s.name)
			}
			return false, "", true
		}
		res.ExitCode, res.Error = nil, ""
		lost := false
		switch {
		case err == nil:
			code := r.ExitCode
			res.ExitCode = &code
			if slices.Contains(s.expect, code) {
				ok = true
			} else {
				res.Status, res.Error = patchmsg.StepFailed, codeUnexpectExit
				msg = "AGENT:Failed:" + s.name + ":exit=" + strconv.Itoa(code)
			}
		case errors.Is(err, patcher.ErrTimeout):
			res.Status, res.Error = patchmsg.StepTimedOut, codeTimeout
			msg = "AGENT:TimedOut:" + s.name
		case errors.Is(err, patcher.ErrConnLost) && s.expectDisconnect:
			ok = true
		default:
			lost = errors.Is(err, patcher.ErrConnLost)
			code := transportCode(err)
			res.Status, res.Error = patchmsg.StepFailed, code
			msg = "AGENT:Transport:" + code
			x.r.log.Warn("step failed on the transport", "patchId", x.plan.job.PatchID, "step", s.name, "err", x.js.red.string(err.Error()))
		}
		if ok && s.expectDisconnect {
			// The device went away as announced (reboot, network restart):
			// get a fresh session before the next step.
			if m := x.reconnect(ctx, s.reconnectTimeout); m != "" {
				if ctx.Err() != nil {
					return false, "", true
				}
				ok = false
				res.Status, res.Error, msg = patchmsg.StepFailed, strings.TrimPrefix(m, "AGENT:Transport:"), m
			}
		}
		if ok {
			res.Status, msg = patchmsg.StepSuccess, ""
			break
		}
		if lost {
			if m := x.reconnect(ctx, connectWindow(x.plan.job.Target)); m != "" {
				if ctx.Err() != nil {
					return false, "", true
				}
				msg = m
				break
			}
		}
		if attempt > s.retries {
			break
		}
		x.r.log.Info("step failed; retrying", "patchId", x.plan.job.PatchID, "step", s.name, "attempt", attempt, "of", s.retries+1)
		select {
		case <-ctx.Done():
			return false, "", true
		case <-time.After(s.retryDelay):
		}
	}
	finished := time.Now().UTC()
	res.FinishedAt = &finished
	res.DurationMs = finished.Sub(started).Milliseconds()
	if s.capture != "none" {
		res.StdoutTail, res.StderrTail = outTail.text(), errTail.text()
		res.Truncated = outTail.truncated || errTail.truncated
	}
	if x.logs != nil {
		x.logs.endStep(ctx, s.name)
	}
	x.recordStep(ctx, res, false)
	return ok, msg, false
}

// openStepLog opens the file of step i's stream (steplog.go), or returns
// nil when the step captures no output or the file cannot be opened (the
// step runs all the same).
func (x *execution) openStepLog(i int, stream string) *stepLog {
	if x.plan.steps[i].capture == "none" {
		return nil
	}
	job := x.plan.job
	l, err := openStepLog(x.r.journal.logDir(job.PatchID, job.Attempt), i, stream)
	if err != nil {
		x.r.log.Warn("step output is not kept on disk", "patchId", job.PatchID, "step", x.plan.steps[i].name, "err", err)
		return nil
	}
	return l
}

// stream is the redacting sink for one stream of step i: it feeds the
// tail, the step log on disk and the log chunks. A step that captures no
// output has none of them.
func (x *execution) stream(i int, stream string, t *tail, disk *stepLog) *redactWriter {
	s := x.plan.steps[i]
	if s.capture == "none" {
		return &redactWriter{out: func([]byte) {}}
	}
	var send func([]byte)
	switch {
	case x.logs != nil:
		send = x.logs.writer(s.name, stream, disk, s.capture == "full")
	case disk != nil:
		send = func(p []byte) { disk.write(p) }
	}
	var mu sync.Mutex
	return &redactWriter{red: x.js.red, out: func(p []byte) {
		mu.Lock()
		defer mu.Unlock()
		t.write(p)
		if send != nil {
			send(p)
		}
	}}
}
