// Package nucleustest is the behaviour suite every nucleus.Runtime passes,
// so the simulated runtime used in demos and benchmarks behaves like the
// real Greengrass one. Only tests import it.
package nucleustest

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Component keys the suite deploys.
const (
	compA   = "com.example.Alpha"
	compB   = "com.example.Beta"
	compBad = "com.example.Broken"
)

// Run runs the suite. newRuntime returns a fresh runtime with no components
// deployed; fail makes every later deployment that includes component fail.
func Run(t *testing.T, newRuntime func(t *testing.T) nucleus.Runtime, fail func(t *testing.T, rt nucleus.Runtime, component string)) {
	t.Run("Name", func(t *testing.T) {
		if newRuntime(t).Name() == "" {
			t.Fatal("Name() is empty")
		}
	})

	t.Run("Nucleus", func(t *testing.T) {
		ns, err := newRuntime(t).Nucleus(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ns.State != nucleus.StateRunning || ns.Version == "" {
			t.Fatalf("Nucleus() = %+v, want RUNNING with a version", ns)
		}
	})

	t.Run("InstallTwo", func(t *testing.T) {
		rt := newRuntime(t)
		mustSucceed(t, rt, doc("d-1", compA, "1.0.0", compB, "1.0.0"))
		want := map[string]string{compA: "1.0.0", compB: "1.0.0"}
		if got := ours(t, rt); !maps.Equal(got, want) {
			t.Fatalf("components = %v, want %v", got, want)
		}
		for _, c := range list(t, rt) {
			if (c.Name == compA || c.Name == compB) && c.State != nucleus.StateRunning {
				t.Errorf("%s is %s, want RUNNING", c.Name, c.State)
			}
		}
	})

	t.Run("Upgrade", func(t *testing.T) {
		rt := newRuntime(t)
		mustSucceed(t, rt, doc("d-1", compA, "1.0.0", compB, "1.0.0"))
		mustSucceed(t, rt, doc("d-2", compA, "1.1.0", compB, "1.0.0"))
		want := map[string]string{compA: "1.1.0", compB: "1.0.0"}
		if got := ours(t, rt); !maps.Equal(got, want) {
			t.Fatalf("components = %v, want %v", got, want)
		}
	})

	t.Run("RemoveByOmitting", func(t *testing.T) {
		rt := newRuntime(t)
		before := names(list(t, rt))
		mustSucceed(t, rt, doc("d-1", compA, "1.0.0", compB, "1.0.0"))
		mustSucceed(t, rt, doc("d-2", compA, "1.0.0"))
		want := map[string]string{compA: "1.0.0"}
		if got := ours(t, rt); !maps.Equal(got, want) {
			t.Fatalf("components = %v, want %v", got, want)
		}
		// Components ggfleet did not deploy stay.
		after := names(list(t, rt))
		for _, n := range before {
			if !slices.Contains(after, n) {
				t.Errorf("component %s, not deployed by ggfleet, was removed", n)
			}
		}
	})

	t.Run("FailingComponent", func(t *testing.T) {
		rt := newRuntime(t)
		mustSucceed(t, rt, doc("d-1", compA, "1.0.0"))
		fail(t, rt, compBad)
		oc, err := rt.Apply(t.Context(), doc("d-2", compA, "1.1.0", compBad, "1.0.0"))
		if err != nil {
			t.Fatal(err)
		}
		if oc.Status != mqttmsg.StatusFailed {
			t.Fatalf("Status = %q, want FAILED", oc.Status)
		}
		switch oc.DetailedStatus {
		case mqttmsg.DetailFailedNoStateChange, mqttmsg.DetailFailedRollbackComplete,
			mqttmsg.DetailFailedRollbackNotRequested, mqttmsg.DetailRejected:
		default:
			t.Errorf("DetailedStatus = %q, want a failed detailed status", oc.DetailedStatus)
		}
		if oc.Stage == "" || oc.Reason == "" {
			t.Errorf("Outcome %+v lacks the failing stage or the reason", oc)
		}
		want := map[string]string{compA: "1.0.0"}
		if got := ours(t, rt); !maps.Equal(got, want) {
			t.Fatalf("after the failure components = %v, want the previous %v", got, want)
		}
	})

	t.Run("IdempotentReapply", func(t *testing.T) {
		rt := newRuntime(t)
		d := doc("d-1", compA, "1.0.0", compB, "2.0.0")
		mustSucceed(t, rt, d)
		first := list(t, rt)
		mustSucceed(t, rt, d)
		if second := list(t, rt); !slices.Equal(first, second) {
			t.Fatalf("re-applying changed the components:\n first %v\nsecond %v", first, second)
		}
	})

	t.Run("EmptyDocumentRemovesAll", func(t *testing.T) {
		rt := newRuntime(t)
		mustSucceed(t, rt, doc("d-1", compA, "1.0.0"))
		mustSucceed(t, rt, doc("d-2"))
		if got := ours(t, rt); len(got) != 0 {
			t.Fatalf("components = %v, want none of ggfleet's", got)
		}
	})
}

// doc builds a deployment document from key, version pairs.
func doc(id string, kv ...string) mqttmsg.DeploymentMsg {
	d := mqttmsg.DeploymentMsg{
		Version: mqttmsg.Version, DeploymentID: id, TaskID: "task-" + id, TemplateName: "suite", TemplateVersion: 1,
		Components: map[string]mqttmsg.ComponentSpec{},
		CreatedAt:  time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Components[kv[i]] = mqttmsg.ComponentSpec{ComponentVersion: kv[i+1]}
	}
	return d
}

func mustSucceed(t *testing.T, rt nucleus.Runtime, d mqttmsg.DeploymentMsg) {
	t.Helper()
	oc, err := rt.Apply(t.Context(), d)
	if err != nil {
		t.Fatalf("Apply(%s): %v", d.DeploymentID, err)
	}
	if oc.Status != mqttmsg.StatusSucceeded || oc.DetailedStatus != mqttmsg.DetailSuccessful {
		t.Fatalf("Apply(%s) = %+v, want SUCCEEDED/SUCCESSFUL", d.DeploymentID, oc)
	}
}

func list(t *testing.T, rt nucleus.Runtime) []mqttmsg.ComponentState {
	t.Helper()
	cs, err := rt.Components(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// ours returns name → version of the suite's components on the core.
func ours(t *testing.T, rt nucleus.Runtime) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, c := range list(t, rt) {
		switch c.Name {
		case compA, compB, compBad:
			m[c.Name] = c.Version
		}
	}
	return m
}

func names(cs []mqttmsg.ComponentState) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}
