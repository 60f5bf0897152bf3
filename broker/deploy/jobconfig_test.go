package deploy_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// TestJobConfig: a deployment task's iotJobConfig is checked at submit (a
// 400 naming the field) and JobConfig merges it over the template's
// jobConfig, setting by setting.
func TestJobConfig(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	_, err := e.tmpl.Create(ctx, cdf.EditableTemplate{Name: "J", Components: []cdf.Component{{Key: "aws.greengrass.Cli", Version: "2.4.0"}},
		JobConfig: json.RawMessage(`{"timeoutConfig":{"inProgressTimeoutInMinutes":30},"jobExecutionsRolloutConfig":{"maximumPerMinute":50}}`)})
	if err != nil {
		t.Fatal(err)
	}
	submit := func(jobConfig string) (string, error) {
		return e.svc.Submit(ctx, cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "J"},
			Targets: cdf.DeploymentTargets{ThingNames: []string{"c1"}}, IotJobConfig: json.RawMessage(jobConfig)})
	}
	for raw, want := range map[string]string{
		`[1]`: "iotJobConfig is not a valid job configuration",
		`{"timeoutConfig":{"inProgressTimeoutInMinutes":-1}}`: "iotJobConfig.timeoutConfig.inProgressTimeoutInMinutes",
		`{"abortConfig":{"criteriaList":[]}}`:                 "iotJobConfig.abortConfig.criteriaList is required",
	} {
		if _, err := submit(raw); !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), want) {
			t.Errorf("iotJobConfig %s: %v, want Invalid containing %q", raw, err, want)
		}
	}
	for _, tc := range []struct{ task, want string }{
		{``, `{"jobExecutionsRolloutConfig":{"maximumPerMinute":50},"timeoutConfig":{"inProgressTimeoutInMinutes":30}}`},
		{`{"jobExecutionsRolloutConfig":{"maximumPerMinute":5}}`, `{"jobExecutionsRolloutConfig":{"maximumPerMinute":5},"timeoutConfig":{"inProgressTimeoutInMinutes":30}}`},
	} {
		id, err := submit(tc.task)
		if err != nil {
			t.Fatal(err)
		}
		jc, err := e.svc.JobConfig(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := json.Marshal(jc); string(got) != tc.want {
			t.Errorf("task iotJobConfig %q: job config %s, want %s", tc.task, got, tc.want)
		}
	}
	if _, err := e.svc.JobConfig(ctx, "nosuchtsk"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("job config of an unknown task: %v", err)
	}
}
