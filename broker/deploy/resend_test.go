package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// publishedSince returns the things published to after the first n messages.
func (p *recPublisher) publishedSince(n int) ([]string, []published) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var things []string
	for _, m := range p.msgs[n:] {
		things = append(things, m.Thing)
	}
	return things, slices.Clone(p.msgs[n:])
}

// A core whose report was lost gets its desired document again, unchanged
// and retained, once its item has waited ResendInterval, then once per
// interval; a core that reported gets nothing, and nothing is sent once
// every item has ended.
func TestResendWaitingDocuments(t *testing.T) {
	e := newEnv(t)
	e.core("c1", true)
	e.core("c2", true)
	e.template("T", "1.0.0")
	id := e.submit(deployTo("T", 1, "c1", "c2"))
	e.drain()
	e.pub.mu.Lock()
	first := slices.Clone(e.pub.msgs)
	e.pub.mu.Unlock()
	var original []byte
	for _, m := range first {
		if m.Thing == "c1" {
			original = m.Payload
		}
	}
	e.report("c2", mqttmsg.DeploymentStatusMsg{DeploymentID: e.pub.last(t, "c2").DeploymentID, Status: mqttmsg.StatusSucceeded})

	r := e.svc.NewResender()
	ctx := context.Background()
	for i, step := range []struct {
		advance time.Duration
		want    []string
	}{
		{0, nil},
		{deploy.ResendInterval - time.Second, nil},
		{time.Second, []string{"c1"}},
		{time.Second, nil},
		{deploy.ResendInterval - 2*time.Second, nil},
		{time.Second, []string{"c1"}},
	} {
		e.advance(step.advance)
		before := e.pub.count()
		n, err := r.Resend(ctx)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got, msgs := e.pub.publishedSince(before)
		if n != len(step.want) || !slices.Equal(got, step.want) {
			t.Fatalf("step %d: sent %d to %v, want %v", i, n, got, step.want)
		}
		for _, m := range msgs {
			if m.Suffix != mqttmsg.Deployments || !m.Retained || !bytes.Equal(m.Payload, original) {
				t.Fatalf("step %d: sent %s (retained %v) %s, want the retained document %s", i, m.Suffix, m.Retained, m.Payload, original)
			}
		}
	}

	e.report("c1", mqttmsg.DeploymentStatusMsg{DeploymentID: e.pub.last(t, "c1").DeploymentID, Status: mqttmsg.StatusSucceeded})
	if got := e.task(id).TaskStatus; got != "Success" {
		t.Fatalf("task = %s after both reports", got)
	}
	e.advance(2 * deploy.ResendInterval)
	if n, err := r.Resend(ctx); n != 0 || err != nil {
		t.Fatalf("after every item ended: sent %d, %v", n, err)
	}
}

// failingFinish is the store of a replica that dies after publishing an
// outcome's event and before storing the outcome.
type failingFinish struct {
	*sqlstore.DB
	fail bool
}

func (f *failingFinish) Finish(ctx context.Context, o deploy.Outcome) (deploy.Finished, error) {
	if f.fail {
		return deploy.Finished{}, errors.New("replica killed")
	}
	return f.DB.Finish(ctx, o)
}

// FinishMany fails the same way (the service groups outcomes through it).
func (f *failingFinish) FinishMany(ctx context.Context, outs []deploy.Outcome) ([]deploy.Finished, error) {
	if f.fail {
		return nil, errors.New("replica killed")
	}
	return f.DB.FinishMany(ctx, outs)
}

// An outcome's event is published before the outcome is stored: a replica
// that dies in between leaves the item waiting with its event published,
// the repeated report finishes it with the same event (same key, so the
// event store keeps one), and a report for a final item publishes nothing.
func TestOutcomeEventBeforeOutcome(t *testing.T) {
	e := newEnv(t)
	e.core("c1", true)
	e.template("T", "1.0.0")
	id := e.submit(deployTo("T", 1, "c1"))
	e.drain()
	report := mqttmsg.DeploymentStatusMsg{Version: 1, DeploymentID: e.pub.last(t, "c1").DeploymentID, TaskID: id, Status: mqttmsg.StatusSucceeded}

	store := &failingFinish{DB: e.db, fail: true}
	var keys []string
	svc := deploy.New(deploy.Config{Tasks: e.db, Store: store, Cores: e.db.Cores(), Templates: e.tmpl, Provider: e.prov, Now: e.clock,
		Events: func(ctx context.Context, detailType string, detail any) {
			if ev, ok := detail.(deploy.CoreTemplateUpdatedEvent); ok && detailType == deploy.EventCoreTemplateUpdated && ev.Status == "success" {
				keys = append(keys, ev.EventKey())
			}
		}})
	ctx := context.Background()
	if err := svc.HandleStatus(ctx, "c1", report); err == nil {
		t.Fatal("HandleStatus succeeded although the outcome could not be stored")
	}
	if s := statuses(e.task(id)); s["c1"] != "InProgress|" || len(keys) != 1 {
		t.Fatalf("after the failure: item %q, %d events; want InProgress with its event published", s["c1"], len(keys))
	}
	store.fail = false
	for range 2 {
		if err := svc.HandleStatus(ctx, "c1", report); err != nil {
			t.Fatal(err)
		}
	}
	if s := statuses(e.task(id)); s["c1"] != "Success|" {
		t.Fatalf("after the report came again: item %q", s["c1"])
	}
	if len(keys) != 2 || keys[0] != keys[1] || keys[0] == "" {
		t.Fatalf("event keys %q: want the same non-empty key twice (the failed attempt and the one that stored the outcome)", keys)
	}
}
