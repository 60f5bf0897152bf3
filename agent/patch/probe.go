package patch

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// probeTimeout bounds one probe: connect, log in, uname.
const probeTimeout = 3 * time.Minute

// probe connects to the target, runs `uname -a` and publishes the result
// (durably: the broker records the host key and marks the target reached).
func (r *Runner) probe(p patchmsg.ProbeRequest) {
	res := patchmsg.ProbeResult{Version: patchmsg.Version, ProbeID: p.ProbeID, DeviceID: p.DeviceID}
	t := p.Target
	if t.DeviceID == "" {
		t.DeviceID = p.DeviceID
	}
	var red *redactor
	func() {
		if err := checkTarget(t); err != nil {
			res.Error = patchmsg.RejectBadJob + ": " + err.Error()
			return
		}
		cred, err := r.credential(t)
		if err != nil {
			res.Error = patchmsg.RejectCredentialMissing + ": " + err.Error()
			return
		}
		red = newRedactor(cred)
		ctx, cancel := context.WithTimeout(r.ctx, probeTimeout)
		defer cancel()
		tr, fp, err := r.dial(ctx, t, cred)
		if err != nil {
			res.Error = transportCode(err) + ": " + err.Error()
			return
		}
		defer tr.Close()
		res.HostKeyFingerprint = fp
		var out, stderr bytes.Buffer
		rr, err := tr.Run(ctx, patcher.Command{Script: "uname -a", Stdout: &out, Stderr: &stderr, Timeout: time.Minute})
		switch {
		case err != nil:
			res.Error = transportCode(err) + ": " + err.Error()
		case rr.ExitCode != 0:
			res.Error = "uname -a failed: " + strings.TrimSpace(stderr.String())
		default:
			res.OK, res.Uname = true, strings.TrimSpace(out.String())
		}
	}()
	res.Error = red.string(res.Error)
	res.Uname = red.string(res.Uname)
	b, err := json.Marshal(res)
	if err != nil {
		r.log.Error("could not encode a probe result", "err", err)
		return
	}
	ctx := context.WithoutCancel(r.ctx)
	if err := r.cfg.Publisher.Publish(ctx, patchmsg.ProbeResultTopic(res.DeviceID), b); err != nil {
		r.log.Error("could not queue a probe result", "deviceId", res.DeviceID, "err", err)
	}
	r.log.Info("probe finished", "deviceId", res.DeviceID, "ok", res.OK, "error", res.Error)
}
