package devices_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
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
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// batchEnv is the device service working Create tasks whole-batch on the
// real parts of local mode: SQLite, the local provider, the provisioning
// service and the CA, for the registered core "core".
type batchEnv struct {
	t      *testing.T
	db     *sqlstore.DB
	prov   *flakyProvider
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
	dir := t.TempDir()
	db := sqlstoretest.OpenIn(t, dir)
	db.SetEnqueuer(func(context.Context, *sql.Tx, []tasks.BatchRef) error { return nil }) // batches are run by RunAll
	key, err := ca.LoadOrCreateSecretsKey(filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	authority := ca.New(ca.Config{Store: db, SecretsKey: key})
	if _, _, err := authority.Init(ctx); err != nil {
		t.Fatal(err)
	}
	lp, err := local.New(local.Config{Store: db.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lp.Close() })
	e := &batchEnv{t: t, db: db, prov: &flakyProvider{Provider: lp}, events: &coretest.Events{}}
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
		BatchReads: func(ctx context.Context) context.Context {
			return provisioning.WithBatchReads(ca.WithBatchLookups(ctx))
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

// flakyProvider fails CreateThing of one thing name transiently, once,
// and counts DescribeThing calls.
type flakyProvider struct {
	provider.Provider
	failOnce  atomic.Value // string
	describes atomic.Int32
}

func (p *flakyProvider) DescribeThing(ctx context.Context, name string) (provider.Thing, error) {
	p.describes.Add(1)
	return p.Provider.DescribeThing(ctx, name)
}

func (p *flakyProvider) CreateThing(ctx context.Context, name, thingType string, attributes map[string]string) error {
	if p.failOnce.CompareAndSwap(name, "") {
		return errkind.New(errkind.Unavailable, "database is locked")
	}
	return p.Provider.CreateThing(ctx, name, thingType, attributes)
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
	th, err := e.prov.DescribeThing(ctx, name)
	if err != nil {
		e.t.Fatalf("thing %s: %v", name, err)
	}
	data, _, err := e.prov.GetArtifact(ctx, thingflow.CertsKey(name))
	if err != nil {
		e.t.Fatalf("certs.zip of %s: %v", name, err)
	}
	files, err := thingflow.ReadZip(data)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := certs.ParseCertificate(files["certs/cert.pem"])
	if err != nil {
		e.t.Fatalf("certs.zip cert of %s: %v", name, err)
	}
	if !slices.Equal(th.Principals, []string{certs.ID(c)}) || files["certs/private.key"] == "" {
		e.t.Fatalf("thing %s principals = %v, want only %s (certs.zip, with its key)", name, th.Principals, certs.ID(c))
	}
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
	_, err := e.prov.DescribeThing(context.Background(), name)
	if err != nil && !errkind.Is(err, errkind.NotFound) {
		e.t.Fatal(err)
	}
	return err == nil
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
		e.prov.describes.Store(0)
		items := e.run(ds)
		if n := e.prov.describes.Load(); n != int32(len(ds)) {
			t.Errorf("%d thing lookups for %d devices, want one each (Provision is told the thing is absent)", n, len(ds))
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
		if n := e.outerTxs.Load(); n != 2 {
			t.Errorf("%d batch transactions, want one per batch (2)", n)
		}
	})

	t.Run("a transient failure rolls the batch back and its devices are worked one by one", func(t *testing.T) {
		e := newBatchEnv(t)
		ds := batchDevices("flaky", 6)
		e.prov.failOnce.Store(ds[4].Name)
		items := e.run(ds)
		for _, d := range ds {
			// A message would say the device found a thing the
			// rolled-back transaction had left behind.
			if it := items[d.Name]; it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "" {
				t.Fatalf("%s = %+v, want Success as a fresh device", d.Name, it)
			}
			e.checkProvisioned(d.Name)
		}
		e.checkEvents(ds)
	})

	t.Run("a commit reported as failed resumes every device in the same run", func(t *testing.T) {
		e := newBatchEnv(t)
		ds := batchDevices("lost", 5)
		e.failAfterCommit.Store(true)
		items := e.run(ds)
		for _, d := range ds {
			if it := items[d.Name]; it.TaskStatus != cdf.StatusSuccess || it.StatusMessage != "" {
				t.Fatalf("%s = %+v, want Success as a device this task provisioned", d.Name, it)
			}
			e.checkProvisioned(d.Name)
		}
		e.checkEvents(ds)
	})
}
