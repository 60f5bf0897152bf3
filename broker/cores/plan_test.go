package cores_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestPlan(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.store.EnsureCores(ctx, []string{"old"}, e.pr.CA.Cert.NotBefore); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		task cdf.NewCoreTask
		want []string // name:action
	}{
		{"create", cdf.NewCoreTask{Type: "Create", CoreVersion: "2.12.0", Cores: []cdf.NewCore{core("new", "pt", ""), core("old", "pt", "")}},
			[]string{"new:create", "old:exists"}},
		{"delete", cdf.NewCoreTask{Type: "Delete", CoreVersion: "2.12.0", Options: &cdf.CoreTaskOptions{}, Cores: []cdf.NewCore{core("old", "x", ""), core("gone", "x", "")}},
			[]string{"old:delete", "gone:notFound"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := e.svc.Plan(ctx, tt.task)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range plan.Cores {
				got = append(got, c.Name+":"+c.Action)
			}
			if !plan.DryRun || plan.Type != tt.task.Type || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan %+v, want %v", plan, tt.want)
			}
		})
	}
	// Nothing was written: no task, no new core record.
	if list, _, err := e.svc.ListTasks(ctx, 100, ""); err != nil || len(list) != 0 {
		t.Errorf("tasks after plans: %v %v", list, err)
	}
	if _, err := e.store.GetCore(ctx, "new"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("the plan recorded core new: %v", err)
	}
	// A bad task is refused as Submit refuses it.
	if _, err := e.svc.Plan(ctx, cdf.NewCoreTask{Type: "Create", Cores: []cdf.NewCore{core("a", "pt", "")}}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("no coreVersion: %v", err)
	}
}
