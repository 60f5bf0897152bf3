package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/cores/coretest"
	"github.com/ggfleet/ggfleet/broker/devices"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// coreFixture serves the API with the real core and device services over
// in-memory fakes of the provider, provisioner and stores.
type coreFixture struct {
	srv    *httptest.Server
	prov   *coretest.Provider
	tasks  *coretest.Tasks
	runner *tasks.Runner
}

func newCoreFixture(t *testing.T) *coreFixture {
	t.Helper()
	f := &coreFixture{prov: coretest.NewProvider(), tasks: coretest.NewTasks()}
	pr := &coretest.Provisioner{P: f.prov, CA: coretest.NewCA(t)}
	cs := coretest.NewCoreStore()
	dsvc := devices.New(devices.Config{Store: coretest.NewDeviceStore(cs), Tasks: f.tasks, Provider: f.prov, Provisioner: pr})
	csvc := cores.New(cores.Config{Store: cs, Tasks: f.tasks, Provider: f.prov, Provisioner: pr, Devices: dsvc})
	f.runner = &tasks.Runner{Store: f.tasks, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: csvc, tasks.KindDevice: dsvc}}
	f.srv = httptest.NewServer(New(Deps{Auth: tokenAuth("core-token"), Cores: csvc, Devices: dsvc}).Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *coreFixture) do(t *testing.T, method, path, body string) (int, http.Header, string) {
	t.Helper()
	return doAPI(t, f.srv.URL, "core-token", method, path, body, cdf.MediaType)
}

func (f *coreFixture) run(t *testing.T, id string) {
	t.Helper()
	if err := coretest.RunAll(context.Background(), f.runner, f.tasks, id); err != nil {
		t.Fatal(err)
	}
}

var taskIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{9}$`)

func TestCoreTaskHandlers(t *testing.T) {
	f := newCoreFixture(t)
	code, h, body := f.do(t, "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[
		{"name":"core-1","provisioningTemplate":"broker-cert","provisioningParameters":{"ThingName":"core-1"}},
		{"name":"core-2","provisioningTemplate":"bad","provisioningParameters":{"ThingName":"core-2"}}]}`)
	id := h.Get("X-Taskid")
	if code != 202 || body != "" || !taskIDRE.MatchString(id) || h.Get("Location") != "/coreTasks/"+id {
		t.Fatalf("POST /coreTasks = %d %q headers %v", code, body, h)
	}
	code, _, body = f.do(t, "GET", "/coreTasks/"+id, "")
	if code != 200 || !strings.Contains(body, `"taskStatus":"Waiting"`) || !strings.Contains(body, `"updatedAt":null`) {
		t.Fatalf("GET waiting task = %d %s", code, body)
	}
	f.run(t, id)
	code, _, body = f.do(t, "GET", "/coreTasks/"+id, "")
	var ct cdf.CoreTask
	if err := json.Unmarshal([]byte(body), &ct); err != nil || code != 200 {
		t.Fatalf("GET task = %d %s", code, body)
	}
	if ct.TaskStatus != "Failure" || ct.Cores[1].StatusMessage != "Failed provisioning: BadRequestError: INVALID_PROVISIONING_TEMPLATE" || strings.Contains(body, `"options"`) {
		t.Fatalf("task = %s", body)
	}

	tests := []struct {
		name, method, path, body string
		code                     int
		contains                 string
	}{
		{"core", "GET", "/cores/core-1", "", 200, `"certs":{"bucket":"local","key":"greengrass2/artifacts/core-1/core-1/certs.zip"`},
		{"core device unknown", "GET", "/cores/core-1", "", 200, `"status":"UNKNOWN"`},
		{"missing core", "GET", "/cores/nope", "", 404, `"message":"core \"nope\" not found"`},
		{"bad core name", "GET", "/cores/a:b", "", 400, "not valid"},
		{"core task of core", "GET", "/cores/core-1/coreTasks/" + id, "", 200, `"id":"` + id + `"`},
		{"core task of other core", "GET", "/cores/core-3/coreTasks/" + id, "", 404, "does not include"},
		{"missing task", "GET", "/coreTasks/nothere00", "", 404, "not found"},
		{"list tasks", "GET", "/coreTasks", "", 200, `"cores":[]`},
		{"list tasks count", "GET", "/coreTasks?count=5", "", 200, `"pagination":{"count":"5"}`},
		{"list tasks bad count", "GET", "/coreTasks?count=0", "", 400, "count must be"},
		{"list cores page", "GET", "/cores?count=1", "", 200, `"lastEvaluated":{"thingName":"core-1"}`},
		{"list cores next", "GET", "/cores?exclusiveStartThingName=core-1", "", 200, `{"cores":[{"name":"core-2"`},
		{"list cores bad failedOnly", "GET", "/cores?failedOnly=yes", "", 400, "failedOnly must be"},
		{"list cores bad version", "GET", "/cores?templateName=T&templateVersion=x", "", 400, "templateVersion must be"},
		{"invalid body", "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[]}`, 400, "at least one core"},
		{"malformed", "POST", "/coreTasks", `{"type":`, 400, "malformed JSON"},
		{"delete without options", "POST", "/coreTasks", `{"type":"Delete","coreVersion":"2.5.0","cores":[{"name":"c","provisioningTemplate":"U"}]}`, 400, "options is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := f.do(t, tt.method, tt.path, tt.body)
			if code != tt.code || !strings.Contains(body, tt.contains) {
				t.Fatalf("%s %s = %d %s, want %d containing %s", tt.method, tt.path, code, body, tt.code, tt.contains)
			}
		})
	}
	_, _, body = f.do(t, "GET", "/cores?count=1", "")
	if strings.Contains(body, `"artifacts"`) || strings.Contains(body, `"device"`) {
		t.Errorf("list items carry artifacts/device: %s", body)
	}
}

func TestDeviceHandlers(t *testing.T) {
	f := newCoreFixture(t)
	code, h, _ := f.do(t, "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"core","provisioningTemplate":"broker-cert","provisioningParameters":{"ThingName":"core"}}]}`)
	if code != 202 {
		t.Fatal(code)
	}
	f.run(t, h.Get("X-Taskid"))
	devTask := `{"type":"Create","coreName":"ignored","devices":[{"name":"d1","provisioningTemplate":"broker-cert","provisioningParameters":{"ThingName":"d1"}}]}`
	if code, _, body := f.do(t, "POST", "/cores/core/deviceTasks", devTask); code != 400 || !strings.Contains(body, "has not enrolled or connected") {
		t.Fatalf("device task for unregistered core = %d %s", code, body)
	}
	f.prov.Cores["core"] = provider.CoreDevice{Name: "core", Status: "HEALTHY"}
	code, h, body := f.do(t, "POST", "/cores/core/deviceTasks", devTask)
	id := h.Get("X-Taskid")
	if code != 202 || body != "" || h.Get("Location") != "/deviceTasks/"+id || !taskIDRE.MatchString(id) {
		t.Fatalf("POST deviceTasks = %d %q %v", code, body, h)
	}
	f.run(t, id)
	tests := []struct {
		name, method, path string
		code               int
		contains           string
	}{
		{"task", "GET", "/deviceTasks/" + id, 200, `"devices":[{"name":"d1","coreName":"core","taskStatus":"Success"`},
		{"list tasks", "GET", "/deviceTasks?count=1", 200, `{"tasks":[{"id":"` + id + `","coreName":"core","devices":[]`},
		{"device", "GET", "/devices/d1", 200, `"artifacts":{"certs":{"bucket":"local","key":"greengrass2/artifacts/d1/d1/certs.zip"`},
		{"list devices", "GET", "/devices?coreName=core", 200, `{"devices":[{"name":"d1","coreName":"core"`},
		{"list other core", "GET", "/devices?coreName=other", 200, `{"devices":[]}`},
		{"bad coreName", "GET", "/devices?coreName=a:b", 400, "not valid"},
		{"missing device", "GET", "/devices/nope", 404, "not found"},
		{"bad deprovision", "DELETE", "/devices/d1?deprovision=maybe", 400, "deprovision must be"},
		{"delete", "DELETE", "/devices/d1", 204, ""},
		{"gone", "GET", "/devices/d1", 404, "not found"},
		{"delete again", "DELETE", "/devices/d1", 404, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := f.do(t, tt.method, tt.path, "")
			if code != tt.code || !strings.Contains(body, tt.contains) {
				t.Fatalf("%s %s = %d %s, want %d containing %s", tt.method, tt.path, code, body, tt.code, tt.contains)
			}
		})
	}
	if _, ok := f.prov.Things["d1"]; ok {
		t.Error("DELETE /devices without parameters must deprovision (default true)")
	}
	if _, ok := f.prov.Assoc["core"]["d1"]; ok {
		t.Error("DELETE /devices without parameters must disassociate (default true)")
	}
}

func FuzzDecodeCoreTask(f *testing.F) {
	f.Add([]byte(`{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"c","provisioningTemplate":"T","configFileGenerator":"MANUAL_INSTALL"}]}`))
	f.Add([]byte(`{"type":"Delete","coreVersion":"2.5.0","options":{"deprovisionCores":true},"cores":[{"name":"c","provisioningTemplate":"U"}]}`))
	f.Add([]byte(`{"cores":[{"name":1}]}`))
	f.Add([]byte(`[[[[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var task cdf.NewCoreTask
		err := DecodeBody(body, &task)
		if err == nil {
			err = cores.Validate(task)
		}
		if err != nil && !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("decode %q: %v is not Invalid", body, err)
		}
	})
}

func FuzzDecodeDeviceTask(f *testing.F) {
	f.Add([]byte(`{"type":"Create","devices":[{"name":"d","provisioningTemplate":"T"}]}`))
	f.Add([]byte(`{"type":"Delete","options":{"deprovisionClientDevices":false},"devices":[{"name":"d","provisioningTemplate":"U"}]}`))
	f.Add([]byte(`{"devices":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var task cdf.NewDeviceTask
		err := DecodeBody(body, &task)
		if err == nil {
			err = devices.Validate(task)
		}
		if err != nil && !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("decode %q: %v is not Invalid", body, err)
		}
	})
}
