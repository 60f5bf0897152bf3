package cores_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/cores/coretest"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// batchEnv is a core service working Create tasks whole-batch on the real
// parts of local mode: SQLite, the local provider, the provisioning
// service and the CA.
type batchEnv struct {
	t      *testing.T
	db     *sqlstore.DB
	prov   *coretest.FlakyProvider
	svc    *cores.Service
	runner *tasks.Runner
	events *coretest.Events
	// failAfterCommit makes the next outer transaction report an error
	// after it committed (a commit whose answer was lost); with crash set
	// too, it also cancels the run's context, as a crash right after the
	// commit would end the work.
	failAfterCommit atomic.Bool
	crash           context.CancelFunc
	publishCalls    atomic.Int32 // EventsAll calls
	batchReads      atomic.Int32 // BatchReads calls
	savepoints      atomic.Int32 // Atomic calls inside a transaction
}

type outerKey struct{}

func newBatchEnv(t *testing.T) *batchEnv {
	t.Helper()
	ctx := context.Background()
	parts := coretest.Local(t) // batches are run by RunAll
	db, authority, lp := parts.DB, parts.CA, parts.Provider
	e := &batchEnv{t: t, db: db, prov: &coretest.FlakyProvider{Provider: lp}, events: &coretest.Events{}}
	psvc := provisioning.New(provisioning.Config{Store: db, Provider: e.prov, Issuer: authority})
	if err := psvc.SeedDefaults(ctx); err != nil {
		t.Fatal(err)
	}
	e.svc = cores.New(cores.Config{
		Store: db.Cores(), Tasks: db, Provider: e.prov, Provisioner: psvc, Events: e.events.Sink,
		EventsAll: func(ctx context.Context, detailType string, details []any) {
			e.publishCalls.Add(1)
			for _, d := range details {
				e.events.Sink(ctx, detailType, d)
			}
		},
		ConfigGen: func(alias string, in cores.ConfigInput) (string, error) {
			if alias != "MANUAL_INSTALL" {
				return "", fmt.Errorf("%w: %s", cores.ErrUnknownGenerator, alias)
			}
			return fmt.Sprintf("---\nsystem:\n  thingName: %q\n", in.CoreName), nil
		},
		BatchReads: func(ctx context.Context, names []string) context.Context {
			e.batchReads.Add(1)
			return db.WithAbsentThings(sqlstore.WithDeferredInserts(provisioning.WithBatchReads(ca.WithBatchLookups(ctx))), names) // as ggfleet serve does
		},
		Atomic: func(ctx context.Context, fn func(ctx context.Context) error) error {
			outer := ctx.Value(outerKey{}) == nil
			if !outer {
				e.savepoints.Add(1)
			}
			err := db.Atomically(ctx, func(ctx context.Context) error { return fn(context.WithValue(ctx, outerKey{}, true)) })
			if err == nil && outer && e.failAfterCommit.CompareAndSwap(true, false) {
				if e.crash != nil {
					e.crash()
					return ctx.Err()
				}
				return errkind.New(errkind.Unavailable, "connection lost during the commit")
			}
			return err
		},
	})
	e.runner = &tasks.Runner{Store: db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: e.svc}}
	return e
}

func (e *batchEnv) submit(cs ...cdf.NewCore) string {
	e.t.Helper()
	id, err := e.svc.Submit(context.Background(), cdf.NewCoreTask{Type: cdf.TaskCreate, CoreVersion: "2.12.0", Cores: cs})
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	return id
}

func (e *batchEnv) items(id string) map[string]cdf.TaskItem {
	e.t.Helper()
	ct, err := e.svc.GetTask(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]cdf.TaskItem{}
	for _, c := range ct.Cores {
		out[c.Name] = c
	}
	return out
}

func (e *batchEnv) thingExists(name string) bool {
	e.t.Helper()
	return coretest.ThingExists(e.t, e.prov, name)
}

// checkProvisioned asserts the thing holds exactly one certificate, the one
// in its certs.zip with the key that matches it, and that the core's
// artifacts are recorded.
func (e *batchEnv) checkProvisioned(name string) {
	e.t.Helper()
	ctx := context.Background()
	coretest.CheckCertsZip(e.t, e.prov, name)
	arts, err := e.db.Cores().ListArtifacts(ctx, name)
	if err != nil || len(arts) != 2 {
		e.t.Fatalf("artifacts of %s = %v, %v; want certs and config", name, arts, err)
	}
}

func (e *batchEnv) createdEvents() map[string]int {
	out := map[string]int{}
	for _, ev := range e.events.List() {
		out[ev]++
	}
	return out
}

func batchCores(prefix string, n int) []cdf.NewCore {
	cs := make([]cdf.NewCore, n)
	for i := range cs {
		name := fmt.Sprintf("%s-%02d", prefix, i)
		cs[i] = core(name, provisioning.DefaultCoreTemplate, "MANUAL_INSTALL")
	}
	return cs
}

// TestCreateWholeBatch works Create tasks whole-batch (Config.Atomic) and
// checks what ProcessItem guarantees still holds: every core provisioned
// once with its certs.zip and artifacts, a failed core leaving nothing
// behind, one event per core; and that a transient failure or a crash after
// the commit loses and repeats nothing.
func TestCreateWholeBatch(t *testing.T) {
	ctx := context.Background()

	t.Run("happy path and a failed core", func(t *testing.T) {
		e := newBatchEnv(t)
		cs := batchCores("ok", cores.CreateBatchSize+5) // two batches
		cs[3].ConfigFileGenerator = "NO_SUCH_GENERATOR"
		// Not this task's: a thing someone else made, a registered core.
		foreign, registered := cs[5].Name, cs[6].Name
		if err := e.prov.CreateThing(ctx, foreign, "", nil); err != nil {
			t.Fatal(err)
		}
		if err := e.prov.Provider.(*local.Provider).MarkCoreRegistered(ctx, registered); err != nil {
			t.Fatal(err)
		}
		e.prov.Describes.Store(0)
		id := e.submit(cs...)
		if err := coretest.RunAll(ctx, e.runner, e.db, id); err != nil {
			t.Fatal(err)
		}
		// One thing lookup a core (Provision is told the thing is absent),
		// none for the registered core, which is not provisioned again;
		// and again for the first batch's cores up to the failed one
		// (cs[3]): the batch's first transaction, without savepoints,
		// ended there and the batch was worked again with them.
		if n, want := e.prov.Describes.Load(), int32(len(cs)-1+4); n != want {
			t.Errorf("%d thing lookups for %d cores, want %d: one each but the registered one, and the first four again", n, len(cs), want)
		}
		// A savepoint for each core of the batch with the failed core,
		// none for the other batch.
		if n := e.savepoints.Load(); n != cores.CreateBatchSize {
			t.Errorf("%d savepoints, want %d (one per core of the first batch only)", n, cores.CreateBatchSize)
		}
		items := e.items(id)
		for i, c := range cs {
			it := items[c.Name]
			switch c.Name {
			case foreign:
				if it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "Core device thing already provisioned" {
					t.Fatalf("%s = %+v, want Success: already provisioned", c.Name, it)
				}
				continue
			case registered:
				if it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "Core device already registered" {
					t.Fatalf("%s = %+v, want Success: already registered", c.Name, it)
				}
				continue
			}
			if i == 3 {
				if it.TaskStatus != cdf.StatusFailure || it.StatusMessage != "Unrecognized generator alias: NO_SUCH_GENERATOR" {
					t.Fatalf("%s = %+v, want the generator failure", c.Name, it)
				}
				if e.thingExists(c.Name) {
					t.Errorf("the failed core %s left its thing behind", c.Name)
				}
				continue
			}
			if it.TaskStatus != cdf.StatusSuccess {
				t.Fatalf("%s = %+v, want Success", c.Name, it)
			}
			e.checkProvisioned(c.Name)
		}
		evs := e.events.List()
		if len(evs) != len(cs)-2 { // none for the cores this task did not make
			t.Fatalf("%d events for %d cores made or failed: %v", len(evs), len(cs)-2, evs)
		}
		if n := e.publishCalls.Load(); n != 2 {
			t.Errorf("events published in %d calls, want one per batch (2)", n)
		}
		if n := e.batchReads.Load(); n != 2 {
			t.Errorf("the batches' keys were prepared in %d batch-read contexts, want one per batch (2)", n)
		}
	})

	t.Run("a transient failure rolls the batch back and its cores are worked one by one", func(t *testing.T) {
		e := newBatchEnv(t)
		cs := batchCores("flaky", 6)
		e.prov.FailOnce.Store(cs[4].Name)
		id := e.submit(cs...)
		if err := coretest.RunAll(ctx, e.runner, e.db, id); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			// A message would say the core found a thing the rolled-back
			// transaction had left behind.
			if it := e.items(id)[c.Name]; it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "" {
				t.Fatalf("%s = %+v, want Success as a fresh core", c.Name, it)
			}
			e.checkProvisioned(c.Name)
		}
		if n := len(e.events.List()); n != len(cs) {
			t.Fatalf("%d events, want %d", n, len(cs))
		}
	})

	t.Run("a core that keeps failing does not hold up the others", func(t *testing.T) {
		e := newBatchEnv(t)
		cs := batchCores("stuck", 6)
		stuck := cs[2].Name
		e.prov.FailAlways.Store(stuck)
		id := e.submit(cs...)
		if err := coretest.RunAll(ctx, e.runner, e.db, id); err == nil {
			t.Fatal("the batch with a core failing transiently succeeded")
		}
		for _, c := range cs {
			it := e.items(id)[c.Name]
			if c.Name == stuck {
				if it.TaskStatus == cdf.StatusSuccess || it.TaskStatus == cdf.StatusFailure || e.thingExists(stuck) {
					t.Fatalf("the stuck core = %+v (thing exists: %v), want it open and no thing", it, e.thingExists(stuck))
				}
				continue
			}
			if it.TaskStatus != cdf.StatusSuccess {
				t.Fatalf("%s = %+v, want Success saved despite the stuck core", c.Name, it)
			}
			e.checkProvisioned(c.Name)
		}
		e.prov.FailAlways.Store("")
		if err := coretest.RunAll(ctx, e.runner, e.db, id); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if it := e.items(id)[c.Name]; it.TaskStatus != cdf.StatusSuccess {
				t.Fatalf("%s = %+v after the re-run", c.Name, it)
			}
			e.checkProvisioned(c.Name)
		}
		for ev, n := range e.createdEvents() {
			if n != 1 {
				t.Errorf("event %s published %d times", ev, n)
			}
		}
	})

	t.Run("a crash after the commit resumes every core and publishes its event", func(t *testing.T) {
		e := newBatchEnv(t)
		cs := batchCores("crash", 5)
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		e.failAfterCommit.Store(true)
		e.crash = cancel
		id := e.submit(cs...)
		if err := coretest.RunAll(runCtx, e.runner, e.db, id); err == nil {
			t.Fatal("the crashed batch reported success")
		}
		for _, c := range cs {
			if it := e.items(id)[c.Name]; it.TaskStatus != cdf.StatusInProgress {
				t.Fatalf("%s = %+v after the crash, want InProgress", c.Name, it)
			}
			e.checkProvisioned(c.Name) // committed
		}
		if n := len(e.events.List()); n != 0 {
			t.Fatalf("%d events published by the crashed run", n)
		}
		e.checkResumed(id, cs)
	})

	t.Run("a commit reported as failed resumes every core in the same run", func(t *testing.T) {
		e := newBatchEnv(t)
		cs := batchCores("lost", 5)
		e.failAfterCommit.Store(true)
		id := e.submit(cs...)
		e.checkResumed(id, cs)
	})
}

// checkResumed runs task id and checks each core ends Success as a core
// provisioned by this task (no "already provisioned" message), once, with
// one event.
func (e *batchEnv) checkResumed(id string, cs []cdf.NewCore) {
	e.t.Helper()
	if err := coretest.RunAll(context.Background(), e.runner, e.db, id); err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cs {
		it := e.items(id)[c.Name]
		if it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "" {
			e.t.Fatalf("%s = %+v, want Success as a core this task provisioned", c.Name, it)
		}
		e.checkProvisioned(c.Name)
	}
	for ev, n := range e.createdEvents() {
		if n != 1 {
			e.t.Errorf("event %s published %d times", ev, n)
		}
	}
	if n := len(e.events.List()); n != len(cs) {
		e.t.Fatalf("%d events, want %d", n, len(cs))
	}
}
