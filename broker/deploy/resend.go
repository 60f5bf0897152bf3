package deploy

import (
	"context"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// ResendInterval is how long an item waits for its core's report before the
// core's desired document is sent again, and then how often it is sent
// again while the item keeps waiting.
//
// A report can be lost after the agent's last chance to send it again: an
// external MQTT broker acknowledges the agent's publish, then drops it with
// the messages in flight at a broker replica that dies (Mosquitto does not
// hand them to another member of the shared subscription). An agent answers
// a document it already applied by reporting the outcome again, without
// applying it twice (agent/deploy, bench/loadgen), and ignores the document
// of the deployment it is applying, so sending the document again recovers
// the lost report and costs a running deployment nothing.
const ResendInterval = time.Minute

// resendLimit bounds the waits one Resend looks at: the ones waiting
// longest come first.
const resendLimit = 10000

// Resender sends the desired documents of items still waiting again (see
// ResendInterval). It remembers when it last sent each, so make one per
// leadership of the periodic work (Run does) and call Resend from one
// goroutine.
type Resender struct {
	svc  *Service
	sent map[string]time.Time // by task id + "/" + core
}

// NewResender returns a Resender that has sent nothing yet.
func (s *Service) NewResender() *Resender {
	return &Resender{svc: s, sent: map[string]time.Time{}}
}

// Resend publishes again the document of every item that has waited
// ResendInterval since it started waiting or since this Resender last sent
// it, and returns how many it sent.
func (r *Resender) Resend(ctx context.Context) (int, error) {
	s := r.svc
	now := s.now()
	// An item started waiting DeploymentTimeout before its deadline, so the
	// ones waiting for ResendInterval have a deadline at most this far away.
	waits, err := s.cfg.Store.OverdueWaits(ctx, now.Add(s.cfg.DeploymentTimeout-ResendInterval), resendLimit)
	if err != nil {
		return 0, fmt.Errorf("deployments waiting for a report: %w", err)
	}
	waiting := make(map[string]bool, len(waits))
	n := 0
	for _, w := range waits {
		key := w.TaskID + "/" + w.Core
		waiting[key] = true
		last, ok := r.sent[key]
		if !ok {
			last = w.Deadline.Add(-s.cfg.DeploymentTimeout)
		}
		if now.Sub(last) < ResendInterval {
			continue
		}
		doc, err := s.cfg.Store.GetDocument(ctx, w.Core)
		if errkind.Is(err, errkind.NotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("deployment document of core %s: %w", w.Core, err)
		}
		r.sent[key] = now
		if doc.DeploymentID != w.DeploymentID {
			continue // superseded: this wait ends with the other task's document
		}
		s.publish(ctx, w.Core, doc.Payload)
		n++
	}
	for key := range r.sent {
		if !waiting[key] {
			delete(r.sent, key)
		}
	}
	if n > 0 {
		s.log.Info("deployment documents sent again to cores whose report has not come", "count", n, "after", ResendInterval)
	}
	return n, nil
}
