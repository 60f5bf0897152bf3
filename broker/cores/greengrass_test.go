package cores_test

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// greengrass is a cores.Greengrass with canned answers that counts calls.
type greengrass struct {
	installed    []cdf.InstalledComponent
	installedErr error
	effective    []cdf.EffectiveDeployment
	effectiveErr error
	calls        atomic.Int32
}

func (g *greengrass) ListInstalledComponents(ctx context.Context, core string) ([]cdf.InstalledComponent, error) {
	g.calls.Add(1)
	return g.installed, g.installedErr
}

func (g *greengrass) ListEffectiveDeployments(ctx context.Context, core string) ([]cdf.EffectiveDeployment, error) {
	g.calls.Add(1)
	return g.effective, g.effectiveErr
}

// TestGetCoreDeviceFromGreengrass: in aws mode the device block is spec
// §7's, from the three Greengrass reads, each optional; the agent's view
// only gives connectivity.
func TestGetCoreDeviceFromGreengrass(t *testing.T) {
	lastStatus := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	seen := cdf.At(lastStatus.Add(time.Minute))
	created := cdf.At(lastStatus.Add(-time.Hour))
	registered := provider.CoreDevice{Name: "c1", Status: "HEALTHY", CoreVersion: "2.14.0", Platform: "linux", Architecture: "amd64",
		LastStatus: lastStatus, Tags: map[string]string{"env": "test"}}
	installed := []cdf.InstalledComponent{{Name: "aws.greengrass.Cli", Version: "2.4.0"}}
	effective := []cdf.EffectiveDeployment{{DeploymentID: "d1", DeploymentName: "T v1 (task x)", IotJobID: "j1", IotJobArn: "arn:aws:iot:us-east-1:1:job/j1",
		TargetArn: "arn:aws:iot:us-east-1:1:thinggroup/g", CoreDeviceExecutionStatus: "SUCCEEDED", CreatedAt: &created}}
	// The agent's report: only its connectivity may show in aws mode.
	agentView := func(context.Context, string) (cdf.Device, bool, error) {
		return cdf.Device{Status: "UNHEALTHY", CoreVersion: "9.9.9", Connectivity: "ONLINE", LastSeenAt: &seen,
			InstalledComponents: []cdf.InstalledComponent{{Name: "from.agent", Version: "1.0.0"}}}, true, nil
	}
	full := cdf.Device{InstalledComponents: installed, EffectiveDeployments: effective, CoreVersion: "2.14.0", Platform: "linux",
		Architecture: "amd64", Status: "HEALTHY", LastStatusUpdateTimestamp: cdf.TimePtr(lastStatus), Tags: map[string]string{"env": "test"},
		Connectivity: "ONLINE", LastSeenAt: &seen}
	empty := cdf.Device{InstalledComponents: []cdf.InstalledComponent{}, EffectiveDeployments: []cdf.EffectiveDeployment{}, Status: "UNKNOWN", Connectivity: "OFFLINE"}

	tests := []struct {
		name      string
		core      *provider.CoreDevice
		coreErr   error
		gg        *greengrass
		view      cores.DeviceViewFunc
		want      cdf.Device
		wantCalls int32
	}{
		{"registered", &registered, nil, &greengrass{installed: installed, effective: effective}, agentView, full, 2},
		{"not registered: UNKNOWN, empty lists, no list calls", nil, nil, &greengrass{installed: installed}, nil, empty, 0},
		{"a list fails: that list is empty", &registered, nil,
			&greengrass{installedErr: errkind.New(errkind.Unavailable, "throttled"), effective: effective}, agentView,
			func() cdf.Device { d := full; d.InstalledComponents = []cdf.InstalledComponent{}; return d }(), 2},
		{"GetCoreDevice fails: UNKNOWN, lists still read", &registered, errkind.New(errkind.Unavailable, "throttled"),
			&greengrass{installed: installed, effective: effective}, nil,
			func() cdf.Device {
				d := empty
				d.InstalledComponents, d.EffectiveDeployments = installed, effective
				return d
			}(), 2},
		{"agent view fails: OFFLINE", &registered, nil, &greengrass{installed: installed, effective: effective},
			func(context.Context, string) (cdf.Device, bool, error) {
				return cdf.Device{}, false, errors.New("database is locked")
			},
			func() cdf.Device { d := full; d.Connectivity, d.LastSeenAt = "OFFLINE", nil; return d }(), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t)
			if err := e.store.EnsureCores(ctx, []string{"c1"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			if tt.core != nil {
				e.prov.Cores["c1"] = *tt.core
			}
			if tt.coreErr != nil {
				e.prov.Fail["GetCoreDevice"] = tt.coreErr
			}
			svc := cores.New(cores.Config{Store: e.store, Tasks: e.tasks, Provider: e.prov, Provisioner: e.pr, DeviceView: tt.view, Greengrass: tt.gg})
			c, err := svc.GetCore(ctx, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c.Device, tt.want) {
				t.Errorf("device\n got %+v\nwant %+v", *c.Device, tt.want)
			}
			if n := tt.gg.calls.Load(); n != tt.wantCalls {
				t.Errorf("%d Greengrass list calls, want %d", n, tt.wantCalls)
			}
			// List endpoints never read Greengrass.
			before := tt.gg.calls.Load()
			if _, _, err := svc.ListCores(ctx, cores.Filter{}, 10, ""); err != nil {
				t.Fatal(err)
			}
			if tt.gg.calls.Load() != before {
				t.Error("ListCores called Greengrass")
			}
			// Nor does a check that a core exists.
			if err := svc.CoreExists(ctx, "c1"); err != nil || tt.gg.calls.Load() != before {
				t.Errorf("CoreExists(c1) = %v, %d Greengrass calls", err, tt.gg.calls.Load()-before)
			}
			if err := svc.CoreExists(ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("CoreExists(nope) = %v, want NotFound", err)
			}
		})
	}
}
