package devices_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestPlan(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.runTask(t, "Create", nil, dev("old", "broker-cert"))
	before, _, err := e.svc.ListTasks(ctx, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		task cdf.NewDeviceTask
		want []string // name:action
	}{
		{"create", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("new", "broker-cert"), dev("old", "broker-cert")}},
			[]string{"new:create", "old:exists"}},
		{"delete", cdf.NewDeviceTask{Type: "Delete", Options: &cdf.DeviceTaskOptions{}, Devices: []cdf.NewDevice{dev("old", "x"), dev("gone", "x")}},
			[]string{"old:delete", "gone:notFound"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := e.svc.Plan(ctx, "core", tt.task)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range plan.Devices {
				got = append(got, d.Name+":"+d.Action)
			}
			if !plan.DryRun || plan.CoreName != "core" || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan %+v, want %v", plan, tt.want)
			}
		})
	}
	after, _, err := e.svc.ListTasks(ctx, 100, "")
	if err != nil || len(after) != len(before) {
		t.Errorf("tasks: %d before, %d after (%v)", len(before), len(after), err)
	}
	if _, err := e.store.GetDevice(ctx, "new"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("the plan recorded device new: %v", err)
	}
	_, err = e.svc.Plan(ctx, "unreg", cdf.NewDeviceTask{Type: "Create", Devices: []cdf.NewDevice{dev("x", "pt")}})
	if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), "has not enrolled") {
		t.Errorf("unregistered core: %v", err)
	}
}
