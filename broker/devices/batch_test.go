package devices_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/cores/coretest"
	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/devices"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// batchEnv is the device service working Create tasks whole-batch on the
// real parts of local mode: SQLite, the local provider, the provisioning
// service and the CA, for the registered core "core".
type batchEnv struct {
	t      *testing.T
	db     *sqlstore.DB
	prov   *coretest.FlakyProvider
	svc    *devices.Service
	runner *tasks.Runner
	events *coretest.Events
	// failAfterCommit makes the next outer transaction report an error
	// after it committed (a commit whose answer was lost).
	failAfterCommit atomic.Bool
	publishCalls    atomic.Int32 // EventsAll calls
	outerTxs        atomic.Int32 // outer transactions begun
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
	if err := db.Cores().EnsureCores(ctx, []string{"core"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := lp.MarkCoreRegistered(ctx, "core"); err != nil {
		t.Fatal(err)
	}
	e.svc = devices.New(devices.Config{
		Store: db.Devices(), Tasks: db, Provider: e.prov, Provisioner: psvc, Events: e.events.Sink,
		EventsAll: func(ctx context.Context, detailType string, details []any) {
			e.publishCalls.Add(1)
			for _, d := range details {
				e.events.Sink(ctx, detailType, d)
			}
		},
		BatchReads: func(ctx context.Context, names []string) context.Context {
			return db.WithAbsentThings(sqlstore.WithDeferredInserts(provisioning.WithBatchReads(ca.WithBatchLookups(ctx))), names) // as ggfleet serve does
		},
		Atomic: func(ctx context.Context, fn func(ctx context.Context) error) error {
			outer := ctx.Value(outerKey{}) == nil
			if outer {
				e.outerTxs.Add(1)
			}
			err := db.Atomically(ctx, func(ctx context.Context) error { return fn(context.WithValue(ctx, outerKey{}, true)) })
			if err == nil && outer && e.failAfterCommit.CompareAndSwap(true, false) {
				return errkind.New(errkind.Unavailable, "connection lost during the commit")
			}
			return err
		},
	})
	e.runner = &tasks.Runner{Store: db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDevice: e.svc}}
	return e
}

func (e *batchEnv) run(ds []cdf.NewDevice) map[string]cdf.TaskItem {
	e.t.Helper()
	ctx := context.Background()
	id, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: cdf.TaskCreate, Devices: ds})
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	if err := coretest.RunAll(ctx, e.runner, e.db, id); err != nil {
		e.t.Fatal(err)
	}
	dt, err := e.svc.GetTask(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]cdf.TaskItem{}
	for _, d := range dt.Devices {
		out[d.Name] = d
	}
	return out
}

// checkProvisioned asserts the device's thing holds exactly one
// certificate, the one in its certs.zip with its key, that its record
// locates that certs.zip, and that it is associated with the core.
func (e *batchEnv) checkProvisioned(name string) {
	e.t.Helper()
	ctx := context.Background()
	coretest.CheckCertsZip(e.t, e.prov, name)
	d, err := e.svc.GetDevice(ctx, name)
	if err != nil || d.CoreName != "core" || d.Artifacts["certs"].Key != thingflow.CertsKey(name) {
		e.t.Fatalf("device %s = %+v, %v; want core's, with its certs.zip", name, d, err)
	}
	assoc, err := e.prov.ListClientDevices(ctx, "core")
	if err != nil || !slices.ContainsFunc(assoc, func(a provider.Association) bool { return a.ThingName == name }) {
		e.t.Fatalf("%s is not associated with the core: %v, %v", name, assoc, err)
	}
}

func (e *batchEnv) thingExists(name string) bool {
	e.t.Helper()
	return coretest.ThingExists(e.t, e.prov, name)
}

// checkEvents asserts one Device Created Event per device.
func (e *batchEnv) checkEvents(ds []cdf.NewDevice) {
	e.t.Helper()
	seen := map[string]int{}
	for _, ev := range e.events.List() {
		seen[ev]++
	}
	for ev, n := range seen {
		if n != 1 {
			e.t.Errorf("event %s published %d times", ev, n)
		}
	}
	if n := len(e.events.List()); n != len(ds) {
		e.t.Fatalf("%d events for %d devices: %v", n, len(ds), e.events.List())
	}
}

func batchDevices(prefix string, n int) []cdf.NewDevice {
	ds := make([]cdf.NewDevice, n)
	for i := range ds {
		ds[i] = dev(fmt.Sprintf("%s-%02d", prefix, i), provisioning.DefaultClientDeviceTemplate)
	}
	return ds
}

// TestCreateWholeBatch works device Create tasks whole-batch (Config.Atomic)
// and checks what ProcessItem guarantees still holds: every device
// provisioned once with its certs.zip, record and association, a failed
// device leaving nothing behind, one event per device; and that a
// transient failure or a lost commit answer loses and repeats nothing.
func TestCreateWholeBatch(t *testing.T) {
	t.Run("happy path and a failed device", func(t *testing.T) {
		e := newBatchEnv(t)
		ds := batchDevices("ok", devices.BatchSize+5) // two batches
		ds[3].ProvisioningTemplate = "no-such-template"
		foreign := ds[5].Name // a thing someone else made
		if err := e.prov.CreateThing(context.Background(), foreign, "", nil); err != nil {
			t.Fatal(err)
		}
		e.prov.Describes.Store(0)
		items := e.run(ds)
		// One thing lookup a device (Provision is told the thing is
		// absent), and again for the first batch's devices up to the
		// failed one (ds[3]): the batch's first transaction, without
		// savepoints, ended there and was worked again with them.
		if n, want := e.prov.Describes.Load(), int32(len(ds)+4); n != want {
			t.Errorf("%d thing lookups for %d devices, want %d: one each, and the first four again", n, len(ds), want)
		}
		for i, d := range ds {
			it := items[d.Name]
			if d.Name == foreign {
				if it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "Client device already registered" {
					t.Fatalf("%s = %+v, want Success: already registered", d.Name, it)
				}
				continue
			}
			if i == 3 {
				if it.TaskStatus != cdf.StatusFailure || !strings.HasPrefix(it.StatusMessage, "Failed provisioning") {
					t.Fatalf("%s = %+v, want the provisioning failure", d.Name, it)
				}
				if e.thingExists(d.Name) {
					t.Errorf("the failed device %s left its thing behind", d.Name)
				}
				continue
			}
			if it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "" {
				t.Fatalf("%s = %+v, want Success", d.Name, it)
			}
			e.checkProvisioned(d.Name)
		}
		e.checkEvents(slices.DeleteFunc(slices.Clone(ds), func(d cdf.NewDevice) bool { return d.Name == foreign }))
		if n := e.publishCalls.Load(); n != 2 {
			t.Errorf("events published in %d calls, want one per batch (2)", n)
		}
		if n := e.outerTxs.Load(); n != 3 {
			t.Errorf("%d batch transactions, want one per batch and one more for the batch with the failed device (3)", n)
		}
	})

	t.Run("a transient failure rolls the batch back and its devices are worked one by one", func(t *testing.T) {
		e := newBatchEnv(t)
		ds := batchDevices("flaky", 6)
		e.prov.FailOnce.Store(ds[4].Name)
		// A message would say a device found a thing the rolled-back
		// transaction had left behind.
		e.checkMadeByTask(ds, e.run(ds))
	})

	t.Run("a commit reported as failed resumes every device in the same run", func(t *testing.T) {
		e := newBatchEnv(t)
		ds := batchDevices("lost", 5)
		e.failAfterCommit.Store(true)
		e.checkMadeByTask(ds, e.run(ds))
	})
}

// checkMadeByTask asserts every device of ds ended Success as one this task
// provisioned (no message: not found already there), provisioned, with one
// event each.
func (e *batchEnv) checkMadeByTask(ds []cdf.NewDevice, items map[string]cdf.TaskItem) {
	e.t.Helper()
	for _, d := range ds {
		if it := items[d.Name]; it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "" {
			e.t.Fatalf("%s = %+v, want Success as a device this task provisioned", d.Name, it)
		}
		e.checkProvisioned(d.Name)
	}
	e.checkEvents(ds)
}
