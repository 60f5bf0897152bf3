package deploy_test

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/jobs"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// TestWithJobQueue runs a deployment task through the real river queue:
// the expansion job, the batch job that leaves the item waiting, and the
// report that completes the task.
func TestWithJobQueue(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.core("c1", true)
	e.template("T", "1.0.0")
	e.timeout = time.Hour
	e.start()
	runner := &tasks.Runner{Store: e.db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: e.svc}}
	q, err := jobs.New(jobs.Config{DB: e.db.SQL(), Runner: runner, Workers: 2, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e.db.SetEnqueuer(q.EnqueueTx)
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = q.Stop(sctx)
	})

	id := e.submit(deployTo("T", 1, "c1"))
	waitFor(t, func() bool { return statuses(e.task(id))["c1"] == "InProgress|" && e.pub.count() == 1 })
	e.report("c1", mqttmsg.DeploymentStatusMsg{DeploymentID: e.pub.last(t, "c1").DeploymentID, Status: mqttmsg.StatusSucceeded})
	waitFor(t, func() bool { return e.task(id).TaskStatus == cdf.StatusSuccess })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
