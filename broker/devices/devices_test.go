package devices_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/cores/coretest"
	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/devices"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

type env struct {
	prov   *coretest.Provider
	pr     *coretest.Provisioner
	tasks  *coretest.Tasks
	cores  *coretest.CoreStore
	store  *coretest.DeviceStore
	events *coretest.Events
	svc    *devices.Service
	runner *tasks.Runner
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{prov: coretest.NewProvider(), tasks: coretest.NewTasks(), cores: coretest.NewCoreStore(), events: &coretest.Events{}}
	e.pr = &coretest.Provisioner{P: e.prov, CA: coretest.NewCA(t)}
	e.store = coretest.NewDeviceStore(e.cores)
	e.svc = devices.New(devices.Config{Store: e.store, Tasks: e.tasks, Provider: e.prov, Provisioner: e.pr, Events: e.events.Sink})
	e.runner = &tasks.Runner{Store: e.tasks, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDevice: e.svc}}
	if err := e.cores.EnsureCores(context.Background(), []string{"core", "unreg"}, e.pr.CA.Cert.NotBefore); err != nil {
		t.Fatal(err)
	}
	e.prov.Cores["core"] = provider.CoreDevice{Name: "core", Status: "HEALTHY"}
	return e
}

func dev(name, template string) cdf.NewDevice {
	return cdf.NewDevice{Name: name, ProvisioningTemplate: template, ProvisioningParameters: map[string]string{"ThingName": name}}
}

func (e *env) runTask(t *testing.T, typ string, opts *cdf.DeviceTaskOptions, ds ...cdf.NewDevice) cdf.DeviceTask {
	t.Helper()
	ctx := context.Background()
	id, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: typ, Devices: ds, Options: opts})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err != nil {
		t.Fatalf("run: %v", err)
	}
	dt, err := e.svc.GetTask(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

func TestSubmitChecksCore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	task := cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("d", "broker-cert")}}
	tests := []struct {
		core, want string
	}{
		{"unreg", "has not enrolled or connected"},
		{"missing", "does not exist"},
		{"bad:name", "not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.core, func(t *testing.T) {
			_, err := e.svc.Submit(ctx, tt.core, task)
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Submit(%s) = %v, want Invalid containing %q", tt.core, err, tt.want)
			}
		})
	}
	if _, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: "Delete", Devices: task.Devices}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("Delete without options = %v, want Invalid", err)
	}
	if _, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("d", "T"), dev("d", "T")}}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("duplicate devices = %v, want Invalid", err)
	}
}

func TestCreateAndAssociate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.prov.CreateThing(ctx, "old", "", nil); err != nil {
		t.Fatal(err)
	}
	e.prov.RefuseAssoc["refused"] = true
	dt := e.runTask(t, "Create", nil, dev("d1", "broker-cert"), dev("old", "broker-cert"), dev("bad", "bad"), dev("refused", "broker-cert"))
	want := []struct{ status, msg string }{
		{"Success", ""},
		{"Success", "Client device already registered"},
		{"Failure", "Failed provisioning: BadRequestError: INVALID_PROVISIONING_TEMPLATE"},
		{"Failure", "Client device cannot be associated with core core"},
	}
	if dt.TaskStatus != "Failure" || dt.CoreName != "core" {
		t.Fatalf("task = %+v", dt)
	}
	for i, w := range want {
		if got := dt.Devices[i]; got.TaskStatus != w.status || got.StatusMessage != w.msg || got.CoreName != "core" {
			t.Errorf("device %d = %+v, want %s %q with coreName", i, got, w.status, w.msg)
		}
	}
	if _, ok := e.prov.Assoc["core"]["d1"]; !ok {
		t.Error("d1 not associated")
	}
	if _, ok := e.prov.Assoc["core"]["old"]; !ok {
		t.Error("an already-registered device is associated too (spec §4.3a)")
	}
	d, err := e.svc.GetDevice(ctx, "d1")
	if err != nil || d.CoreName != "core" || d.Artifacts["certs"].Key != "greengrass2/artifacts/d1/d1/certs.zip" {
		t.Fatalf("GetDevice = %+v, %v", d, err)
	}
	if _, ok := e.prov.Artifacts[thingflow.CertsKey("d1")]; !ok {
		t.Error("no certs.zip for d1")
	}
	list, more, err := e.svc.ListDevices(ctx, "core", 2, "")
	if err != nil || !more || len(list) != 2 || list[0].Name != "bad" {
		t.Fatalf("ListDevices = %+v, %v, %v", list, more, err)
	}
	tl, _, err := e.svc.ListTasks(ctx, 10, "")
	if err != nil || len(tl) != 1 || tl[0].Devices == nil || len(tl[0].Devices) != 0 {
		t.Fatalf("ListTasks = %+v, %v", tl, err)
	}
}

// TestCreateRecordRemovedMeanwhile checks that a device whose record was
// removed (DELETE /devices) after its task was submitted gets it back,
// with its certs.zip, when the task provisions it.
func TestCreateRecordRemovedMeanwhile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("d1", "broker-cert")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteDevice(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err != nil {
		t.Fatal(err)
	}
	if dt, _ := e.svc.GetTask(ctx, id); dt.TaskStatus != "Success" {
		t.Fatalf("task = %+v", dt)
	}
	d, err := e.svc.GetDevice(ctx, "d1")
	if err != nil || d.CoreName != "core" || d.Artifacts["certs"].Key != "greengrass2/artifacts/d1/d1/certs.zip" {
		t.Fatalf("GetDevice(d1) = %+v, %v; want its record back, with its certs.zip", d, err)
	}
}

func TestDeleteTask(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.runTask(t, "Create", nil, dev("d1", "broker-cert"), dev("d2", "broker-cert"))
	e.prov.RefuseAssoc["d2"] = true
	dt := e.runTask(t, "Delete", &cdf.DeviceTaskOptions{DeprovisionClientDevices: true}, dev("d1", "U"), dev("d2", "U"))
	if dt.Devices[0].TaskStatus != "Success" || dt.Devices[1].StatusMessage != "Client device cannot be disassociated with core core" {
		t.Fatalf("task = %+v", dt)
	}
	if dt.Options == nil || !dt.Options.DeprovisionClientDevices {
		t.Errorf("options = %+v", dt.Options)
	}
	if _, ok := e.prov.Things["d1"]; ok {
		t.Error("d1 thing not deprovisioned")
	}
	if _, err := e.svc.GetDevice(ctx, "d1"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetDevice(d1) = %v, want NotFound", err)
	}
	var deleted int
	for _, ev := range e.events.List() {
		if strings.HasPrefix(ev, "Device Deleted Event") {
			deleted++
		}
	}
	if deleted != 2 {
		t.Errorf("Device Deleted events = %d", deleted)
	}
}

func TestDeleteTaskDeviceNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: "Delete", Devices: []cdf.NewDevice{dev("x", "U")}, Options: &cdf.DeviceTaskOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteDevice(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err != nil {
		t.Fatal(err)
	}
	dt, _ := e.svc.GetTask(ctx, id)
	if dt.Devices[0].StatusMessage != "DEVICE_NOT_FOUND" || dt.TaskStatus != "Failure" {
		t.Fatalf("task = %+v", dt)
	}
}

func TestDeleteDevice(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name                      string
		deprovision, disassociate bool
	}{
		{"defaults", true, true},
		{"keep thing", false, true},
		{"keep association", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.runTask(t, "Create", nil, dev("d", "broker-cert"))
			if err := e.svc.DeleteDevice(ctx, "d", tt.deprovision, tt.disassociate); err != nil {
				t.Fatal(err)
			}
			_, thing := e.prov.Things["d"]
			_, assoc := e.prov.Assoc["core"]["d"]
			if thing == tt.deprovision || assoc == tt.disassociate {
				t.Errorf("thing=%v assoc=%v after deprovision=%v disassociate=%v", thing, assoc, tt.deprovision, tt.disassociate)
			}
			if err := e.svc.DeleteDevice(ctx, "d", true, true); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("second delete = %v, want NotFound", err)
			}
		})
	}
}

func TestCreateResume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.pr.CrashAfterCreate = true
	id, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("d", "broker-cert")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err == nil {
		t.Fatal("first run succeeded; want the simulated crash")
	}
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err != nil {
		t.Fatal(err)
	}
	dt, _ := e.svc.GetTask(ctx, id)
	if dt.Devices[0].TaskStatus != "Success" || dt.Devices[0].StatusMessage != "" || len(e.prov.Certs) != 1 || e.pr.Prepares != 1 {
		t.Fatalf("task = %+v, certs=%d prepares=%d", dt, len(e.prov.Certs), e.pr.Prepares)
	}
}

func TestTransientAssociationRetries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.prov.Fail["AssociateClientDevices"] = errkind.New(errkind.Unavailable, "database is locked")
	id, err := e.svc.Submit(ctx, "core", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("d", "broker-cert")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err == nil {
		t.Fatal("want a transient error from the batch")
	}
	e.prov.Fail["AssociateClientDevices"] = nil
	if err := coretest.RunAll(ctx, e.runner, e.tasks, id); err != nil {
		t.Fatal(err)
	}
	if dt, _ := e.svc.GetTask(ctx, id); dt.TaskStatus != "Success" {
		t.Fatalf("task = %+v", dt)
	}
	if _, ok := e.prov.Assoc["core"]["d"]; !ok {
		t.Error("not associated after the retry")
	}
}
