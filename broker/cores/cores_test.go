package cores_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/cores/coretest"
	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/devices"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/certs"
)

type env struct {
	t       *testing.T
	prov    *coretest.Provider
	pr      *coretest.Provisioner
	tasks   *coretest.Tasks
	store   *coretest.CoreStore
	devs    *coretest.DeviceStore
	events  *coretest.Events
	svc     *cores.Service
	dsvc    *devices.Service
	runner  *tasks.Runner
	flaky   atomic.Int32 // FLAKY generator fails transiently while > 0
	genRuns atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, prov: coretest.NewProvider(), tasks: coretest.NewTasks(), store: coretest.NewCoreStore(), events: &coretest.Events{}}
	e.pr = &coretest.Provisioner{P: e.prov, CA: coretest.NewCA(t)}
	e.devs = coretest.NewDeviceStore(e.store)
	e.dsvc = devices.New(devices.Config{Store: e.devs, Tasks: e.tasks, Provider: e.prov, Provisioner: e.pr, Events: e.events.Sink})
	e.svc = cores.New(cores.Config{
		Store: e.store, Tasks: e.tasks, Provider: e.prov, Provisioner: e.pr, Devices: e.dsvc, Events: e.events.Sink,
		ConfigGen: func(alias string, in cores.ConfigInput) (string, error) {
			e.genRuns.Add(1)
			switch alias {
			case "MANUAL_INSTALL":
				return fmt.Sprintf("---\nsystem:\n  thingName: %q\nnucleus: %q\n", in.CoreName, in.CoreVersion), nil
			case "BROKEN":
				return "", errors.New("generator exploded")
			case "FLAKY":
				if e.flaky.Add(-1) >= 0 {
					return "", errkind.New(errkind.Unavailable, "database is locked")
				}
				return "---\n", nil
			}
			return "", fmt.Errorf("%w: %s", cores.ErrUnknownGenerator, alias)
		},
	})
	e.runner = &tasks.Runner{Store: e.tasks, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: e.svc, tasks.KindDevice: e.dsvc}}
	return e
}

func core(name, template, gen string) cdf.NewCore {
	return cdf.NewCore{Name: name, ProvisioningTemplate: template, ProvisioningParameters: map[string]string{"ThingName": name}, ConfigFileGenerator: gen}
}

func (e *env) submit(typ string, opts *cdf.CoreTaskOptions, cs ...cdf.NewCore) string {
	e.t.Helper()
	id, err := e.svc.Submit(context.Background(), cdf.NewCoreTask{Type: typ, CoreVersion: "2.5.0", Cores: cs, Options: opts})
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	return id
}

func (e *env) run(id string) error {
	return coretest.RunAll(context.Background(), e.runner, e.tasks, id)
}

func (e *env) task(id string) cdf.CoreTask {
	e.t.Helper()
	ct, err := e.svc.GetTask(context.Background(), id)
	if err != nil {
		e.t.Fatalf("get task: %v", err)
	}
	return ct
}

func (e *env) zip(name string) map[string]string {
	e.t.Helper()
	data, _, err := e.prov.GetArtifact(context.Background(), thingflow.CertsKey(name))
	if err != nil {
		e.t.Fatalf("certs.zip of %s: %v", name, err)
	}
	files, err := thingflow.ReadZip(data)
	if err != nil {
		e.t.Fatal(err)
	}
	return files
}

// checkOneCert asserts the thing holds exactly one certificate and that
// certs.zip carries that certificate.
func (e *env) checkOneCert(name string) {
	e.t.Helper()
	th, err := e.prov.DescribeThing(context.Background(), name)
	if err != nil {
		e.t.Fatalf("thing %s: %v", name, err)
	}
	if len(th.Principals) != 1 {
		e.t.Fatalf("thing %s principals = %v, want exactly one", name, th.Principals)
	}
	c, err := certs.ParseCertificate(e.zip(name)["certs/cert.pem"])
	if err != nil {
		e.t.Fatalf("certs.zip cert of %s: %v", name, err)
	}
	if certs.ID(c) != th.Principals[0] {
		e.t.Fatalf("certs.zip of %s holds certificate %s, thing holds %s", name, certs.ID(c), th.Principals[0])
	}
}

func TestValidate(t *testing.T) {
	ok := cdf.NewCoreTask{Type: "Create", CoreVersion: "2.5.0", Cores: []cdf.NewCore{core("c1", "T", "")}}
	tests := []struct {
		name string
		mod  func(*cdf.NewCoreTask)
		want string // substring of the error; "" = valid
	}{
		{"valid", func(*cdf.NewCoreTask) {}, ""},
		{"bad type", func(t *cdf.NewCoreTask) { t.Type = "Update" }, "type must be"},
		{"no coreVersion", func(t *cdf.NewCoreTask) { t.CoreVersion = "" }, "coreVersion is required"},
		{"no cores", func(t *cdf.NewCoreTask) { t.Cores = nil }, "at least one core"},
		{"bad name", func(t *cdf.NewCoreTask) { t.Cores[0].Name = "a:b" }, "cores[0].name"},
		{"long name", func(t *cdf.NewCoreTask) { t.Cores[0].Name = strings.Repeat("a", 129) }, "cores[0].name"},
		{"duplicate", func(t *cdf.NewCoreTask) { t.Cores = append(t.Cores, core("c1", "T", "")) }, "cores[1].name \"c1\" repeats cores[0]"},
		{"no template", func(t *cdf.NewCoreTask) { t.Cores[0].ProvisioningTemplate = "" }, "cores[0].provisioningTemplate"},
		{"delete without options", func(t *cdf.NewCoreTask) { t.Type = "Delete" }, "options is required"},
		{"too many", func(t *cdf.NewCoreTask) {
			t.Cores = make([]cdf.NewCore, cores.MaxCores+1)
		}, "at most 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := ok
			task.Cores = append([]cdf.NewCore(nil), ok.Cores...)
			tt.mod(&task)
			err := cores.Validate(task)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want Invalid containing %q", err, tt.want)
			}
		})
	}
}

func TestCreateHappyPath(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.submit("Create", nil, core("core-1", "broker-cert", "MANUAL_INSTALL"), core("core-2", "no-cert", ""))
	if len(id) != 9 {
		t.Fatalf("task id %q is not 9 characters", id)
	}
	before := e.task(id)
	if before.TaskStatus != "Waiting" || before.Cores[0].TaskStatus != "Waiting" || !before.Cores[0].UpdatedAt.IsZero() {
		t.Fatalf("fresh task = %+v, want Waiting with null updatedAt", before)
	}
	if _, err := e.svc.GetCore(ctx, "core-1"); err != nil {
		t.Fatalf("core record must exist right after submit: %v", err)
	}
	if err := e.run(id); err != nil {
		t.Fatalf("run: %v", err)
	}
	ct := e.task(id)
	if ct.TaskStatus != "Success" || ct.Cores[0].TaskStatus != "Success" || ct.Cores[1].TaskStatus != "Success" {
		t.Fatalf("task = %+v, want all Success", ct)
	}
	if ct.Cores[0].Name != "core-1" || ct.Cores[1].Name != "core-2" || ct.Options != nil || ct.CoreVersion != "2.5.0" {
		t.Fatalf("task = %+v: want request order, no options, coreVersion", ct)
	}
	e.checkOneCert("core-1")
	z := e.zip("core-1")
	if z["certs/private.key"] == "" || z["certs/root.ca.pem"] != e.pr.CA.PEM {
		t.Errorf("core-1 certs.zip = %v, want private.key and root.ca.pem", keys(z))
	}
	e.checkOneCert("core-2")
	if z := e.zip("core-2"); z["certs/private.key"] != "" {
		t.Errorf("core-2 certs.zip has a private key the broker did not make")
	}
	if e.prov.Groups["core-1"] != "Greengrass V2 thing group for core core-1" {
		t.Errorf("thing group = %q", e.prov.Groups["core-1"])
	}
	cfg := string(e.prov.Artifacts[thingflow.ConfigKey("core-1")])
	if !strings.Contains(cfg, `thingName: "core-1"`) || e.prov.ContentTypes[thingflow.ConfigKey("core-1")] != "application/yaml" {
		t.Errorf("installer config = %q", cfg)
	}
	if _, ok := e.prov.Artifacts[thingflow.ConfigKey("core-2")]; ok {
		t.Errorf("core-2 has an installer config without a generator")
	}
	c, err := e.svc.GetCore(ctx, "core-1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Artifacts["certs"].Key != "greengrass2/artifacts/core-1/core-1/certs.zip" || c.Artifacts["certs"].Bucket != "local" ||
		c.Artifacts["config"].Key != "greengrass2/artifacts/core-1/core-1/installerConfig.yml" {
		t.Errorf("artifacts = %+v", c.Artifacts)
	}
	b, _ := json.Marshal(c)
	for _, want := range []string{`"installedComponents":[]`, `"effectiveDeployments":[]`, `"status":"UNKNOWN"`, `"connectivity":"OFFLINE"`,
		`"desired":{"name":"None","version":0}`, `"deploymentStatus":"None"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("GET core body %s lacks %s", b, want)
		}
	}
	if ev := e.events.List(); len(ev) != 2 || !strings.Contains(ev[0], "Core Created Event") || !strings.Contains(ev[0], "Status:success") {
		t.Errorf("events = %v", ev)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestCreateSkipsExisting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.prov.Cores["reg"] = provider.CoreDevice{Name: "reg", Status: "HEALTHY"}
	if err := e.prov.CreateThing(ctx, "thing", "", nil); err != nil {
		t.Fatal(err)
	}
	id := e.submit("Create", nil, core("reg", "broker-cert", ""), core("thing", "broker-cert", ""))
	if err := e.run(id); err != nil {
		t.Fatal(err)
	}
	ct := e.task(id)
	if ct.Cores[0].StatusMessage != "Core device already registered" || ct.Cores[1].StatusMessage != "Core device thing already provisioned" || ct.TaskStatus != "Success" {
		t.Fatalf("task = %+v", ct)
	}
	if e.pr.Prepares != 0 || len(e.events.List()) != 0 {
		t.Fatalf("prepares = %d, events = %v; want nothing done", e.pr.Prepares, e.events.List())
	}
	c, _ := e.svc.GetCore(ctx, "reg")
	if c.Device.Status != "HEALTHY" {
		t.Errorf("registered core status = %q", c.Device.Status)
	}
}

func TestCreateFailures(t *testing.T) {
	tests := []struct {
		name  string
		core  cdf.NewCore
		setup func(e *env)
		want  string
		all   bool // the injected fault hits every core
	}{
		{"provisioning", core("c", "bad", ""), nil, "Failed provisioning: BadRequestError: INVALID_PROVISIONING_TEMPLATE", false},
		{"upload certs", core("c", "broker-cert", ""), func(e *env) { e.prov.Fail["PutArtifact:certs.zip"] = errors.New("AccessDenied") }, "Failed uploading certs: AccessDenied", true},
		{"upload config", core("c", "broker-cert", "MANUAL_INSTALL"), func(e *env) {
			e.prov.Fail["PutArtifact:installerConfig.yml"] = errors.New("AccessDenied")
		}, "Failed uploading certs: AccessDenied", false},
		{"unknown alias", core("c", "broker-cert", "NOPE"), nil, "Unrecognized generator alias: NOPE", false},
		{"generator error", core("c", "broker-cert", "BROKEN"), nil, "Failed creating config: generator exploded", false},
		{"thing group", core("c", "broker-cert", ""), func(e *env) { e.prov.Fail["CreateThingGroup"] = errors.New("InvalidRequestException") }, "InvalidRequestException", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			id := e.submit("Create", nil, tt.core, core("ok", "broker-cert", ""))
			if err := e.run(id); err != nil {
				t.Fatal(err)
			}
			ct := e.task(id)
			if ct.TaskStatus != "Failure" || ct.Cores[0].TaskStatus != "Failure" || ct.Cores[0].StatusMessage != tt.want {
				t.Fatalf("task = %+v, want Failure %q", ct, tt.want)
			}
			if !tt.all && ct.Cores[1].TaskStatus != "Success" {
				t.Errorf("the other core = %+v, want Success", ct.Cores[1])
			}
			if ct.StatusMessage != "" {
				t.Errorf("task statusMessage = %q, want empty for item failures", ct.StatusMessage)
			}
			found := false
			for _, ev := range e.events.List() {
				found = found || (strings.Contains(ev, "CoreName:c ") && strings.Contains(ev, "Status:failed"))
			}
			if !found {
				t.Errorf("no failed Core Created Event in %v", e.events.List())
			}
		})
	}
}

func TestCreateResumesAfterCrash(t *testing.T) {
	t.Run("after provision, config transiently failing", func(t *testing.T) {
		e := newEnv(t)
		e.flaky.Store(1)
		id := e.submit("Create", nil, core("c", "broker-cert", "FLAKY"))
		if err := e.run(id); err == nil {
			t.Fatal("first run succeeded; want a transient error")
		}
		if got := e.task(id).Cores[0].TaskStatus; got != "InProgress" {
			t.Fatalf("item after the crash = %s, want InProgress", got)
		}
		if err := e.run(id); err != nil {
			t.Fatalf("re-run: %v", err)
		}
		if ct := e.task(id); ct.TaskStatus != "Success" {
			t.Fatalf("task = %+v", ct)
		}
		if e.pr.Prepares != 1 || e.pr.Provisions != 1 || len(e.prov.Certs) != 1 || len(e.prov.Things) != 1 {
			t.Fatalf("prepares=%d provisions=%d certs=%d things=%d, want 1 each", e.pr.Prepares, e.pr.Provisions, len(e.prov.Certs), len(e.prov.Things))
		}
		e.checkOneCert("c")
		if z := e.zip("c"); z["certs/private.key"] == "" {
			t.Error("certs.zip lost its private key")
		}
	})
	t.Run("inside provision, after the thing was created", func(t *testing.T) {
		e := newEnv(t)
		e.pr.CrashAfterCreate = true
		id := e.submit("Create", nil, core("c", "broker-cert", ""))
		if err := e.run(id); err == nil {
			t.Fatal("first run succeeded; want a transient error")
		}
		if err := e.run(id); err != nil {
			t.Fatalf("re-run: %v", err)
		}
		ct := e.task(id)
		if ct.TaskStatus != "Success" || ct.Cores[0].StatusMessage != "" {
			t.Fatalf("task = %+v, want Success (resumed, not 'already provisioned')", ct)
		}
		if e.pr.Prepares != 1 || len(e.prov.Certs) != 1 {
			t.Fatalf("prepares=%d certs=%d, want 1 each", e.pr.Prepares, len(e.prov.Certs))
		}
		e.checkOneCert("c")
		z := e.zip("c")
		if z["certs/private.key"] == "" || z["certs/root.ca.pem"] == "" {
			t.Errorf("certs.zip = %v, want key and root CA after resuming", keys(z))
		}
	})
}

func TestSubmitKeepsTemplateState(t *testing.T) {
	e := newEnv(t)
	e.submit("Create", nil, core("c", "broker-cert", ""))
	r := e.store.Cores["c"]
	r.DesiredName, r.DesiredVersion = "T", 3
	e.store.Cores["c"] = r
	e.submit("Create", nil, core("c", "broker-cert", ""))
	if got := e.store.Cores["c"]; got.DesiredName != "T" || got.DesiredVersion != 3 {
		t.Fatalf("re-submit reset the template: %+v", got)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	id := e.submit("Create", nil, core("c", "broker-cert", ""), core("lonely", "broker-cert", ""))
	if err := e.run(id); err != nil {
		t.Fatal(err)
	}
	e.prov.Cores["c"] = provider.CoreDevice{Name: "c", Status: "HEALTHY"}
	did, err := e.dsvc.Submit(ctx, "c", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{
		{Name: "d1", ProvisioningTemplate: "broker-cert", ProvisioningParameters: map[string]string{"ThingName": "d1"}},
		{Name: "d2", ProvisioningTemplate: "broker-cert", ProvisioningParameters: map[string]string{"ThingName": "d2"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.run(did); err != nil {
		t.Fatal(err)
	}
	if len(e.prov.Assoc["c"]) != 2 {
		t.Fatalf("associations = %v", e.prov.Assoc["c"])
	}

	del := e.submit("Delete", &cdf.CoreTaskOptions{DeprovisionCores: true, DeprovisionClientDevices: true}, core("c", "UNUSED", ""), core("lonely", "UNUSED", ""))
	if err := e.run(del); err != nil {
		t.Fatal(err)
	}
	ct := e.task(del)
	if ct.TaskStatus != "Success" || ct.Options == nil || !ct.Options.DeprovisionCores {
		t.Fatalf("delete task = %+v", ct)
	}
	for _, n := range []string{"c", "lonely", "d1", "d2"} {
		if _, ok := e.prov.Things[n]; ok {
			t.Errorf("thing %s still exists", n)
		}
	}
	if _, err := e.svc.GetCore(ctx, "c"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetCore after delete = %v, want NotFound", err)
	}
	if _, err := e.dsvc.GetDevice(ctx, "d1"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetDevice after core delete = %v, want NotFound", err)
	}
	if _, ok := e.prov.Cores["c"]; ok {
		t.Error("core device registration still exists")
	}
	var deleted int
	for _, ev := range e.events.List() {
		if strings.HasPrefix(ev, "Core Deleted Event") && strings.Contains(ev, "Status:success") {
			deleted++
		}
	}
	if deleted != 2 {
		t.Errorf("Core Deleted events = %d in %v", deleted, e.events.List())
	}
}

func TestDeleteFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("core not found", func(t *testing.T) {
		e := newEnv(t)
		id := e.submit("Delete", &cdf.CoreTaskOptions{}, core("gone", "UNUSED", ""))
		if err := e.store.DeleteCore(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := e.run(id); err != nil {
			t.Fatal(err)
		}
		if ct := e.task(id); ct.TaskStatus != "Failure" || ct.Cores[0].StatusMessage != "CORE_NOT_FOUND" {
			t.Fatalf("task = %+v", ct)
		}
	})
	t.Run("deprovision fails", func(t *testing.T) {
		e := newEnv(t)
		e.prov.Fail["DeleteThing"] = errors.New("boom")
		id := e.submit("Delete", &cdf.CoreTaskOptions{DeprovisionCores: true}, core("c", "UNUSED", ""))
		if err := e.run(id); err != nil {
			t.Fatal(err)
		}
		if ct := e.task(id); ct.TaskStatus != "Failure" || ct.Cores[0].StatusMessage != "Core cannot be removed from IoT service" {
			t.Fatalf("task = %+v", ct)
		}
	})
	t.Run("no deprovision keeps the thing", func(t *testing.T) {
		e := newEnv(t)
		if err := e.prov.CreateThing(ctx, "c", "", nil); err != nil {
			t.Fatal(err)
		}
		id := e.submit("Delete", &cdf.CoreTaskOptions{DeprovisionClientDevices: true}, core("c", "UNUSED", ""))
		if err := e.run(id); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.prov.Things["c"]; !ok || e.task(id).TaskStatus != "Success" {
			t.Fatal("deprovisionCores=false must keep the core's thing (deprovisionClientDevices does not decide it)")
		}
	})
}

func TestReads(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.submit("Create", nil, core("c1", "broker-cert", ""))
	b := e.submit("Create", nil, core("c2", "broker-cert", ""))
	if _, err := e.svc.GetCoreTask(ctx, "c1", a); err != nil {
		t.Errorf("GetCoreTask(c1, a) = %v", err)
	}
	if _, err := e.svc.GetCoreTask(ctx, "c1", b); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetCoreTask(c1, b) = %v, want NotFound", err)
	}
	if _, err := e.svc.GetTask(ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetTask(nope) = %v, want NotFound", err)
	}
	list, more, err := e.svc.ListTasks(ctx, 1, "")
	if err != nil || len(list) != 1 || !more || list[0].Cores == nil || len(list[0].Cores) != 0 {
		t.Fatalf("ListTasks = %+v, %v, %v", list, more, err)
	}
	cs, more, err := e.svc.ListCores(ctx, cores.Filter{}, 10, "c1")
	if err != nil || more || len(cs) != 1 || cs[0].Name != "c2" || cs[0].Device != nil {
		t.Fatalf("ListCores = %+v, %v, %v", cs, more, err)
	}
}

func TestGetCoreDeviceView(t *testing.T) {
	seen := cdf.At(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	reported := cdf.At(seen.Add(-time.Second))
	reportedView := cdf.Device{
		InstalledComponents:  []cdf.InstalledComponent{{Name: "aws.greengrass.Nucleus", Version: "2.12.0"}},
		EffectiveDeployments: []cdf.EffectiveDeployment{{DeploymentID: "d1", DeploymentName: "T v1", CoreDeviceExecutionStatus: "SUCCEEDED"}},
		CoreVersion:          "2.12.0", Platform: "linux", Architecture: "amd64", Status: "UNHEALTHY",
		LastStatusUpdateTimestamp: &reported, Connectivity: "ONLINE", LastSeenAt: &seen,
	}
	registered := cdf.Device{
		InstalledComponents: []cdf.InstalledComponent{}, EffectiveDeployments: []cdf.EffectiveDeployment{},
		CoreVersion: "2.5.0", Status: "HEALTHY", Connectivity: "OFFLINE",
	}
	tests := []struct {
		name string
		view cores.DeviceViewFunc
		want cdf.Device
	}{
		{"no hook: the provider's view", nil, registered},
		{"reported: the view as is", func(context.Context, string) (cdf.Device, bool, error) {
			return reportedView, true, nil
		}, reportedView},
		{"never reported: provider status, view connectivity", func(context.Context, string) (cdf.Device, bool, error) {
			return cdf.Device{Status: "UNKNOWN", Connectivity: "ONLINE", LastSeenAt: &seen}, false, nil
		}, func() cdf.Device { d := registered; d.Connectivity, d.LastSeenAt = "ONLINE", &seen; return d }()},
		{"view fails: the provider's view", func(context.Context, string) (cdf.Device, bool, error) {
			return cdf.Device{}, false, errors.New("database is locked")
		}, registered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t)
			if err := e.store.EnsureCores(ctx, []string{"c1"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			e.prov.Cores["c1"] = provider.CoreDevice{Name: "c1", Status: "HEALTHY", CoreVersion: "2.5.0"}
			svc := cores.New(cores.Config{Store: e.store, Tasks: e.tasks, Provider: e.prov, Provisioner: e.pr, DeviceView: tt.view})
			c, err := svc.GetCore(ctx, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c.Device, tt.want) {
				t.Errorf("device\n got %+v\nwant %+v", *c.Device, tt.want)
			}
		})
	}
}
