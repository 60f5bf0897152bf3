package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
)

// TestAWSGreengrassDetails runs the Greengrass details of aws mode on the
// real binary against the fake: components checked with DescribeComponent
// at template save, the template's jobConfig and the task's iotJobConfig
// merged into CreateDeployment's iotJobConfiguration with the job tagged by
// task, and GET /cores/{name}'s device block read from Greengrass.
func TestAWSGreengrassDetails(t *testing.T) {
	b, fake := startAWSBroker(t)
	const name = "gg-core-1"

	// Components must exist in Greengrass: public (AWS's) or private.
	for _, c := range []struct{ key, version string }{
		{"aws.greengrass.Cli", "9.9.9"},
		{"com.example.App", "1.0.0"},
	} {
		r := b.must(400, "POST", "/templates", map[string]any{"name": "GgT",
			"components": []map[string]any{{"key": "aws.greengrass.Nucleus", "version": "2.12.0"}, {"key": c.key, "version": c.version}}})
		if !strings.Contains(r.Message(), c.key+":"+c.version) {
			t.Fatalf("unknown component %s:%s: message %q does not name it", c.key, c.version, r.Message())
		}
	}
	b.must(404, "GET", "/templates/GgT", nil)
	if fake.Calls("DescribeComponent") == 0 {
		t.Fatal("no DescribeComponent call reached the fake")
	}
	// A bad jobConfig is a 400 naming the field.
	r := b.must(400, "POST", "/templates", map[string]any{"name": "GgT",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}},
		"jobConfig":  map[string]any{"timeoutConfig": map[string]any{"inProgressTimeoutInMinutes": 0}}})
	if !strings.Contains(r.Message(), "jobConfig.timeoutConfig.inProgressTimeoutInMinutes") {
		t.Fatalf("bad jobConfig: %q", r.Message())
	}

	// The private component exists once the account has it.
	if err := fake.AddComponent("com.example.App", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	b.must(201, "POST", "/templates", map[string]any{"name": "GgT",
		"components": []map[string]any{
			{"key": "aws.greengrass.Cli", "version": "2.4.0"},
			{"key": "com.example.App", "version": "1.0.0", "configurationUpdate": map[string]any{"merge": `{"level":"debug"}`, "reset": []string{"/old"}},
				"runWith": map[string]any{"posixUser": "ggc_user:ggc_group"}}},
		"jobConfig": map[string]any{"timeoutConfig": map[string]any{"inProgressTimeoutInMinutes": 30},
			"jobExecutionsRolloutConfig": map[string]any{"maximumPerMinute": 50}},
		"deploymentPolicies": map[string]any{"failureHandlingPolicy": "DO_NOTHING",
			"componentUpdatePolicy": map[string]any{"timeoutInSeconds": 90, "action": "SKIP_NOTIFY_COMPONENTS"}}})

	id := b.createCores(core(name, "configFileGenerator", "MANUAL_INSTALL"))
	if task := b.waitTask("/coreTasks/"+id, 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("core task = %v; log:\n%s", task, b.log())
	}
	if err := fake.RegisterCoreDevice(name, awsfake.CoreHealthy); err != nil {
		t.Fatal(err)
	}

	// A bad iotJobConfig is a 400 too.
	r = b.must(400, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "GgT"},
		"targets":      map[string]any{"thingNames": []string{name}},
		"iotJobConfig": map[string]any{"abortConfig": map[string]any{"criteriaList": []map[string]any{{"failureType": "SOMETIMES", "action": "CANCEL", "thresholdPercentage": 10, "minNumberOfExecutedThings": 1}}}}})
	if !strings.Contains(r.Message(), "iotJobConfig.abortConfig.criteriaList[0].failureType") {
		t.Fatalf("bad iotJobConfig: %q", r.Message())
	}

	// The task's iotJobConfig wins over the template's jobConfig setting by
	// setting: rollout and abort from the task, timeout from the template.
	abort := []map[string]any{{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 20, "minNumberOfExecutedThings": 2}}
	r = b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "GgT"},
		"targets": map[string]any{"thingNames": []string{name}},
		"iotJobConfig": map[string]any{"jobExecutionsRolloutConfig": map[string]any{"maximumPerMinute": 5},
			"abortConfig": map[string]any{"criteriaList": abort}}})
	taskID := r.Header.Get("x-taskid")
	var dep awsfake.Deployment
	// The job is tagged just after CreateDeployment answers.
	waitFor(t, time.Minute, "the Greengrass deployment of task "+taskID+" with its tagged job", func() bool {
		for _, d := range fake.Deployments() {
			if d.Tags["ggfleet:taskId"] == taskID && len(d.JobTags) > 0 {
				dep = d
				return true
			}
		}
		return false
	})
	wantJob := map[string]any{"jobExecutionsRolloutConfig": map[string]any{"maximumPerMinute": 5},
		"abortConfig": map[string]any{"criteriaList": abort}, "timeoutConfig": map[string]any{"inProgressTimeoutInMinutes": 30}}
	if got, want := canonical(t, dep.JobConfig), canonical(t, mustJSON(t, wantJob)); got != want {
		t.Errorf("iotJobConfiguration the fake saw:\n%s\nwant\n%s", got, want)
	}
	if dep.JobTags["cdf-greengrass2-provisioning-deployment-task-id"] != taskID {
		t.Errorf("IoT job tags = %v, want the task id %s", dep.JobTags, taskID)
	}
	wantApp := `{"componentVersion":"1.0.0","configurationUpdate":{"merge":"{\"level\":\"debug\"}","reset":["/old"]},"runWith":{"posixUser":"ggc_user:ggc_group"}}`
	if got, want := canonical(t, dep.Components["com.example.App"]), canonical(t, wantApp); got != want {
		t.Errorf("component com.example.App = %s, want %s", got, want)
	}
	wantPolicies := `{"failureHandlingPolicy":"DO_NOTHING","componentUpdatePolicy":{"timeoutInSeconds":90,"action":"SKIP_NOTIFY_COMPONENTS"}}`
	if got, want := canonical(t, dep.Policies), canonical(t, wantPolicies); got != want {
		t.Errorf("deploymentPolicies = %s, want %s", got, want)
	}

	// The nucleus applies it; GET /cores/{name} shows Greengrass's view.
	waitFor(t, time.Minute, "the job execution on "+name, func() bool {
		n, err := fake.FinishJobExecutions(name, "SUCCEEDED")
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	if task := b.waitTask("/deploymentTasks/"+taskID, 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment task = %v; log:\n%s", task, b.log())
	}
	var c struct {
		Device struct {
			Status               string            `json:"status"`
			CoreVersion          string            `json:"coreVersion"`
			Platform             string            `json:"platform"`
			Architecture         string            `json:"architecture"`
			LastStatusUpdate     string            `json:"lastStatusUpdateTimestamp"`
			InstalledComponents  []json.RawMessage `json:"installedComponents"`
			EffectiveDeployments []struct {
				DeploymentID, IotJobID, CoreDeviceExecutionStatus, TargetArn, CreatedAt string
			} `json:"effectiveDeployments"`
		} `json:"device"`
	}
	b.must(200, "GET", "/cores/"+name, nil).JSON(t, &c)
	d := c.Device
	if d.Status != "HEALTHY" || d.CoreVersion == "" || d.Platform != "linux" || d.Architecture == "" || d.LastStatusUpdate == "" {
		t.Errorf("device = %+v", d)
	}
	if got := canonical(t, mustJSON(t, d.InstalledComponents)); got != canonical(t, `[{"name":"aws.greengrass.Cli","version":"2.4.0"},{"name":"com.example.App","version":"1.0.0"}]`) {
		t.Errorf("installedComponents = %s", got)
	}
	if len(d.EffectiveDeployments) != 1 || d.EffectiveDeployments[0].DeploymentID != dep.ID || d.EffectiveDeployments[0].IotJobID != dep.JobID ||
		d.EffectiveDeployments[0].CoreDeviceExecutionStatus != "SUCCEEDED" || d.EffectiveDeployments[0].TargetArn != dep.TargetArn ||
		d.EffectiveDeployments[0].CreatedAt == "" {
		t.Errorf("effectiveDeployments = %+v, want deployment %s (job %s) SUCCEEDED", d.EffectiveDeployments, dep.ID, dep.JobID)
	}

	// A core Greengrass does not know: status UNKNOWN, empty lists, and no
	// list calls for it.
	const ghost = "gg-ghost-1"
	r = b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "GgT"},
		"targets": map[string]any{"thingNames": []string{ghost}}})
	if task := b.waitTask("/deploymentTasks/"+r.Header.Get("x-taskid"), 2*time.Minute); task["taskStatus"] != "Failure" {
		t.Fatalf("deployment to an unregistered core = %v", task)
	}
	before := fake.Calls("ListInstalledComponents") + fake.Calls("ListEffectiveDeployments")
	var g map[string]any
	b.must(200, "GET", "/cores/"+ghost, nil).JSON(t, &g)
	if got := mustJSON(t, g["device"]); !strings.Contains(got, `"status":"UNKNOWN"`) || !strings.Contains(got, `"installedComponents":[]`) ||
		!strings.Contains(got, `"effectiveDeployments":[]`) {
		t.Errorf("device of an unregistered core = %s", got)
	}
	if n := fake.Calls("ListInstalledComponents") + fake.Calls("ListEffectiveDeployments") - before; n != 0 {
		t.Errorf("%d list calls for an unregistered core, want 0", n)
	}
}

// canonical re-encodes a JSON text (a string or raw bytes) with sorted keys.
func canonical[T string | json.RawMessage](t *testing.T, text T) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		t.Fatalf("not JSON: %s: %v", text, err)
	}
	return mustJSON(t, v)
}
