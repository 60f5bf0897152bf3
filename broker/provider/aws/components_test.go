package aws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/greengrassv2"

	"github.com/ggfleet/ggfleet/broker/errkind"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/templates"
)

// rawGreengrass is a plain SDK Greengrass client on the fake, without the
// provider's checks, to see what the fake itself accepts.
func rawGreengrass(fake *awsfake.Fake) *greengrassv2.Client {
	return greengrassv2.New(greengrassv2.Options{
		Region:           awsfake.Region,
		BaseEndpoint:     ptr(fake.URL()),
		Credentials:      awstest.Credentials,
		RetryMaxAttempts: 1,
	})
}

func TestCheckComponent(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, func(c *awsprov.Config) { c.MaxAttempts = 1 })
	// The account comes from the agent policy's ARN, as at broker start.
	if _, err := p.PutPolicy(ctx, awsprov.AgentPolicyName, awsprov.AgentPolicyDocument); err != nil {
		t.Fatal(err)
	}
	if err := fake.AddComponent("com.example.Private", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	var _ templates.ComponentChecker = p
	for _, tc := range []struct {
		key, version string
		kind         errkind.Kind // Other: no error
	}{
		{"aws.greengrass.Cli", "2.4.0", errkind.Other},
		{"aws.greengrass.Nucleus", "2.12.0", errkind.Other},
		{"com.example.Private", "1.0.0", errkind.Other},
		{"aws.greengrass.Cli", "9.9.9", errkind.Invalid},
		{"com.example.Private", "1.0.1", errkind.Invalid},
		{"com.example.Missing", "1.0.0", errkind.Invalid},
		{"bad:key", "1.0.0", errkind.Invalid},
	} {
		err := p.CheckComponent(ctx, tc.key, tc.version)
		switch {
		case tc.kind == errkind.Other && err != nil:
			t.Errorf("%s:%s: %v", tc.key, tc.version, err)
		case tc.kind != errkind.Other && !errkind.Is(err, tc.kind):
			t.Errorf("%s:%s: %v, want kind %v", tc.key, tc.version, err, tc.kind)
		case tc.kind == errkind.Invalid && !strings.Contains(errkind.Message(err), tc.key):
			t.Errorf("%s:%s: message %q does not name the component", tc.key, tc.version, errkind.Message(err))
		}
	}
	// A private name is looked up in the account first, a public one at AWS
	// first: one call each when it exists.
	before := fake.Calls("DescribeComponent")
	if err := p.CheckComponent(ctx, "com.example.Private", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckComponent(ctx, "aws.greengrass.Cli", "2.4.0"); err != nil {
		t.Fatal(err)
	}
	if n := fake.Calls("DescribeComponent") - before; n != 2 {
		t.Errorf("%d DescribeComponent calls for two existing components, want 2", n)
	}
	// Throttling that outlasts the retries is Unavailable (503), not Invalid.
	fake.FailNext("DescribeComponent", "ThrottlingException")
	if err := p.CheckComponent(ctx, "aws.greengrass.Cli", "2.4.0"); !errkind.Is(err, errkind.Unavailable) {
		t.Fatalf("throttled: %v, want Unavailable", err)
	}
	// The fake checks the ARN as Greengrass does.
	bad := "arn:aws:greengrass:us-east-1:aws:components:aws.greengrass.Cli"
	if _, err := rawGreengrass(fake).DescribeComponent(ctx, &greengrassv2.DescribeComponentInput{Arn: &bad}); httpStatus(err) != 400 {
		t.Fatalf("version-less ARN: %v, want 400", err)
	}
}

func TestCoreDeviceViews(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, func(c *awsprov.Config) { c.Limits = map[string]float64{"CreateDeployment": 0} })
	fake.SetQuota("CreateDeployment", 0)
	if err := p.CreateThing(ctx, "core-1", "", nil); err != nil {
		t.Fatal(err)
	}
	// Not registered: NotFound, as GetCoreDevice.
	if _, err := p.ListInstalledComponents(ctx, "core-1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("installed components of an unregistered core: %v", err)
	}
	if _, err := p.ListEffectiveDeployments(ctx, "core-1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("effective deployments of an unregistered core: %v", err)
	}
	if err := fake.RegisterCoreDevice("core-1", awsfake.CoreHealthy); err != nil {
		t.Fatal(err)
	}
	if list, err := p.ListInstalledComponents(ctx, "core-1"); err != nil || len(list) != 0 {
		t.Fatalf("fresh core: %v, %v", list, err)
	}

	// A deployment reaches the core: it is effective (QUEUED), and once it
	// succeeds its components are installed.
	group := "cdf_ggv2_deploymentForTemplate_T_1"
	if err := p.CreateThingGroup(ctx, group, ""); err != nil {
		t.Fatal(err)
	}
	if err := p.AddThingToGroup(ctx, "core-1", group); err != nil {
		t.Fatal(err)
	}
	dep, err := p.CreateDeployment(ctx, awsprov.DeploymentSpec{TargetGroup: group, Name: "T v1",
		Components: map[string]awsprov.Component{"aws.greengrass.Cli": {Version: "2.4.0"}, "com.example.App": {Version: "1.2.3"}}})
	if err != nil {
		t.Fatal(err)
	}
	eds, err := p.ListEffectiveDeployments(ctx, "core-1")
	if err != nil || len(eds) != 1 || eds[0].DeploymentID != dep.ID || eds[0].IotJobID != dep.JobID ||
		eds[0].CoreDeviceExecutionStatus != "QUEUED" || eds[0].DeploymentName != "T v1" ||
		!strings.HasSuffix(eds[0].TargetArn, ":thinggroup/"+group) || !strings.HasSuffix(eds[0].IotJobArn, ":job/"+dep.JobID) || eds[0].CreatedAt == nil {
		t.Fatalf("effective deployments: %+v, %v", eds, err)
	}
	if _, err := fake.FinishJobExecutions("core-1", "SUCCEEDED"); err != nil {
		t.Fatal(err)
	}
	eds, err = p.ListEffectiveDeployments(ctx, "core-1")
	if err != nil || len(eds) != 1 || eds[0].CoreDeviceExecutionStatus != "SUCCEEDED" {
		t.Fatalf("after success: %+v, %v", eds, err)
	}
	ics, err := p.ListInstalledComponents(ctx, "core-1")
	if err != nil || fmt.Sprint(ics) != "[{aws.greengrass.Cli 2.4.0} {com.example.App 1.2.3}]" {
		t.Fatalf("installed after success: %v, %v", ics, err)
	}

	// More than a page: every component, in order.
	var many []awsfake.InstalledComponent
	for i := range 130 {
		many = append(many, awsfake.InstalledComponent{Name: fmt.Sprintf("com.example.C%03d", i), Version: "1.0.0"})
	}
	if err := fake.SetInstalledComponents("core-1", many); err != nil {
		t.Fatal(err)
	}
	before := fake.Calls("ListInstalledComponents")
	ics, err = p.ListInstalledComponents(ctx, "core-1")
	if err != nil || len(ics) != 130 || ics[0].Name != "com.example.C000" || ics[129].Name != "com.example.C129" {
		t.Fatalf("130 installed components: %d, %v", len(ics), err)
	}
	if n := fake.Calls("ListInstalledComponents") - before; n != 2 {
		t.Errorf("%d calls for 130 components, want 2 pages of 100", n)
	}

	// The fake bounds maxResults and checks nextToken and the filter.
	gg := rawGreengrass(fake)
	core := "core-1"
	for name, in := range map[string]*greengrassv2.ListInstalledComponentsInput{
		"maxResults 0":   {CoreDeviceThingName: &core, MaxResults: ptr[int32](0)},
		"maxResults 101": {CoreDeviceThingName: &core, MaxResults: ptr[int32](101)},
		"bad token":      {CoreDeviceThingName: &core, NextToken: ptr("nope")},
		"bad filter":     {CoreDeviceThingName: &core, TopologyFilter: "SOME"},
	} {
		if _, err := gg.ListInstalledComponents(ctx, in); httpStatus(err) != 400 {
			t.Errorf("ListInstalledComponents %s: %v, want 400", name, err)
		}
	}
	if _, err := gg.ListEffectiveDeployments(ctx, &greengrassv2.ListEffectiveDeploymentsInput{CoreDeviceThingName: &core, MaxResults: ptr[int32](101)}); httpStatus(err) != 400 {
		t.Errorf("ListEffectiveDeployments maxResults 101: %v, want 400", err)
	}
	out, err := gg.ListInstalledComponents(ctx, &greengrassv2.ListInstalledComponentsInput{CoreDeviceThingName: &core, MaxResults: ptr[int32](7)})
	if err != nil || len(out.InstalledComponents) != 7 || out.NextToken == nil {
		t.Fatalf("first page of 7: %v", err)
	}
}

func TestDeploymentJobConfigAndTags(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, func(c *awsprov.Config) { c.Limits = map[string]float64{"CreateDeployment": 0} })
	fake.SetQuota("CreateDeployment", 0)
	group := "cdf_ggv2_deploymentForTemplate_T_2"
	if err := p.CreateThingGroup(ctx, group, ""); err != nil {
		t.Fatal(err)
	}
	jcJSON := `{"jobExecutionsRolloutConfig":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":1.5,"rateIncreaseCriteria":{"numberOfSucceededThings":3}},"maximumPerMinute":50},` +
		`"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL","thresholdPercentage":25.5,"minNumberOfExecutedThings":4}]},` +
		`"timeoutConfig":{"inProgressTimeoutInMinutes":60}}`
	jc, err := templates.ParseJobConfig("iotJobConfig", json.RawMessage(jcJSON))
	if err != nil {
		t.Fatal(err)
	}
	spec := awsprov.DeploymentSpec{TargetGroup: group, Name: "T v2",
		Components: map[string]awsprov.Component{"aws.greengrass.Cli": {Version: "2.4.0"}},
		JobConfig:  jc, JobTags: map[string]string{"cdf-greengrass2-provisioning-deployment-task-id": "task123"}}
	if _, err := p.CreateDeployment(ctx, spec); err != nil {
		t.Fatal(err)
	}
	deps := fake.Deployments()
	if len(deps) != 1 {
		t.Fatalf("%d deployments", len(deps))
	}
	var got, want any
	_ = json.Unmarshal(deps[0].JobConfig, &got)
	_ = json.Unmarshal([]byte(jcJSON), &want)
	if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
		t.Errorf("iotJobConfiguration the fake saw:\n%s\nwant\n%s", g, w)
	}
	if deps[0].JobTags["cdf-greengrass2-provisioning-deployment-task-id"] != "task123" {
		t.Errorf("job tags = %v", deps[0].JobTags)
	}

	// The fake refuses what Greengrass refuses.
	for name, raw := range map[string]string{
		"timeout too long": `{"timeoutConfig":{"inProgressTimeoutInMinutes":10081}}`,
		"bad failure type": `{"abortConfig":{"criteriaList":[{"failureType":"OOPS","action":"CANCEL","thresholdPercentage":1,"minNumberOfExecutedThings":1}]}}`,
		"empty criteria":   `{"abortConfig":{"criteriaList":[]}}`,
		"rate too high":    `{"jobExecutionsRolloutConfig":{"maximumPerMinute":1001}}`,
		"factor decimals":  `{"jobExecutionsRolloutConfig":{"exponentialRate":{"baseRatePerMinute":1,"incrementFactor":1.55,"rateIncreaseCriteria":{"numberOfNotifiedThings":1}}}}`,
	} {
		var bad templates.JobConfig
		if err := json.Unmarshal([]byte(raw), &bad); err != nil {
			t.Fatal(err)
		}
		s := spec
		s.JobConfig = &bad
		if _, err := p.CreateDeployment(ctx, s); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
}
