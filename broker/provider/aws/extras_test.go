package aws_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
)

func TestDescribeEndpoints(t *testing.T) {
	p, fake := newProvider(t, nil)
	eps, err := p.DescribeEndpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if eps.Data != fake.DataEndpoint() ||
		eps.Credential != awsfake.EndpointPrefix+".credentials.iot."+awsfake.Region+".amazonaws.com" {
		t.Fatalf("endpoints = %+v", eps)
	}
}

func TestPutEvents(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, nil)
	var entries []awsprov.EventEntry
	for i := range 23 { // three PutEvents calls of at most ten
		entries = append(entries, awsprov.EventEntry{Source: "com.aws.cdf.greengrass2-provisioning", DetailType: "Core Created Event",
			Detail: `{"coreName":"c` + string(rune('a'+i)) + `"}`, Time: time.Now()})
	}
	if err := p.PutEvents(ctx, "", entries); err != nil {
		t.Fatal(err)
	}
	if got := len(fake.Events()); got != 23 || fake.Calls("PutEvents") != 3 {
		t.Fatalf("fake has %d events from %d calls, want 23 from 3", got, fake.Calls("PutEvents"))
	}
	// A malformed detail is refused per entry: PutEvents reports it.
	err := p.PutEvents(ctx, "", []awsprov.EventEntry{{Source: "s", DetailType: "d", Detail: "not json"}})
	if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), "MalformedDetail") {
		t.Fatalf("malformed detail: err = %v", err)
	}
	// Throttling of the whole call is retried by the SDK.
	fake.FailNext("PutEvents", "ThrottlingException")
	if err := p.PutEvents(ctx, "my-bus", entries[:1]); err != nil {
		t.Fatalf("after one throttle: %v", err)
	}
	if evs := fake.Events(); evs[len(evs)-1].EventBus != "my-bus" {
		t.Fatalf("last event bus = %q", evs[len(evs)-1].EventBus)
	}
}

func TestPresignArtifact(t *testing.T) {
	ctx := context.Background()
	p, _ := newProvider(t, nil)
	key := "greengrass2/artifacts/c1/c1/certs.zip"
	if _, err := p.PutArtifact(ctx, key, "application/zip", []byte("zipbytes")); err != nil {
		t.Fatal(err)
	}
	url, err := p.PresignArtifact(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(url, "X-Amz-Signature=") || !strings.Contains(url, "fleet1/"+key) {
		t.Fatalf("url = %s", url)
	}
	resp, err := http.Get(url) // no credentials: the URL carries them
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/zip" {
		t.Fatalf("GET presigned: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// An expired URL is refused, as S3 does.
	expired := strings.Replace(url, "X-Amz-Date=", "X-Amz-Date=2001", 1)
	expired = expired[:strings.Index(expired, "X-Amz-Date=2001")+len("X-Amz-Date=")] + "20010101T000000Z" + expired[strings.Index(expired, "X-Amz-Date=2001")+len("X-Amz-Date=2001")+16:]
	resp, err = http.Get(expired)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET expired presigned URL: %d, want 403", resp.StatusCode)
	}
	if _, err := p.PresignArtifact(ctx, "greengrass2/artifacts/none/none/certs.zip", time.Minute); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("missing artifact: %v", err)
	}
	if _, err := p.PresignArtifact(ctx, "/bad", time.Minute); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("bad key: %v", err)
	}
}

func TestDeployments(t *testing.T) {
	ctx := context.Background()
	// CreateDeployment's 1 TPS quota would only make the test slow.
	p, fake := newProvider(t, func(c *awsprov.Config) { c.Limits = map[string]float64{"CreateDeployment": 0} })
	fake.SetQuota("CreateDeployment", 0)
	for _, th := range []string{"core-a", "core-b"} {
		if err := p.CreateThing(ctx, th, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	group := "cdf_ggv2_deploymentForTemplate_T_1"
	if err := p.CreateThingGroup(ctx, group, ""); err != nil {
		t.Fatal(err)
	}
	if err := p.AddThingToGroup(ctx, "core-a", group); err != nil {
		t.Fatal(err)
	}
	spec := awsprov.DeploymentSpec{TargetGroup: group, Name: "T v1",
		Components: map[string]awsprov.Component{"aws.greengrass.Cli": {Version: "2.4.0", Merge: `{"a":1}`, Reset: []string{"/b"}, PosixUser: "ggc_user"}},
		Policies:   json.RawMessage(`{"failureHandlingPolicy":"ROLLBACK","componentUpdatePolicy":{"timeoutInSeconds":60,"action":"NOTIFY_COMPONENTS"}}`),
		Tags:       map[string]string{"ggfleet:taskId": "task1"}, ClientToken: "tok-1"}
	dep, err := p.CreateDeployment(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.CreateDeployment(ctx, spec)
	if err != nil || again != dep {
		t.Fatalf("same client token: %+v, %v; want %+v", again, err, dep)
	}
	if n := len(fake.Deployments()); n != 1 {
		t.Fatalf("%d deployments, want 1", n)
	}
	// core-b joins the group later and still gets the job (continuous).
	if err := p.AddThingToGroup(ctx, "core-b", group); err != nil {
		t.Fatal(err)
	}
	for _, core := range []string{"core-a", "core-b"} {
		je, err := p.DescribeJobExecution(ctx, dep.JobID, core)
		if err != nil || je.Status != awsprov.JobQueued {
			t.Fatalf("%s: %+v, %v", core, je, err)
		}
	}
	if _, err := fake.FinishJobExecutions("core-b", "FAILED"); err != nil {
		t.Fatal(err)
	}
	je, err := p.DescribeJobExecution(ctx, dep.JobID, "core-b")
	if err != nil || je.Status != "FAILED" || !awsprov.JobFinal(je.Status) || je.Details["detailed-deployment-status"] == "" {
		t.Fatalf("core-b after failure: %+v, %v", je, err)
	}
	if _, err := p.DescribeJobExecution(ctx, dep.JobID, "core-c"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("no execution: %v", err)
	}

	// The fake checks what AWS checks.
	for name, mod := range map[string]func(*awsprov.DeploymentSpec){
		"missing group": func(s *awsprov.DeploymentSpec) { s.TargetGroup = "nope" },
		"empty version": func(s *awsprov.DeploymentSpec) { s.Components = map[string]awsprov.Component{"x": {}} },
		"bad merge": func(s *awsprov.DeploymentSpec) {
			s.Components = map[string]awsprov.Component{"x": {Version: "1.0.0", Merge: "[1]"}}
		},
		"bad policy":     func(s *awsprov.DeploymentSpec) { s.Policies = json.RawMessage(`{"failureHandlingPolicy":"SOMETIMES"}`) },
		"bad token":      func(s *awsprov.DeploymentSpec) { s.ClientToken = "no spaces allowed" },
		"policy not obj": func(s *awsprov.DeploymentSpec) { s.Policies = json.RawMessage(`[1]`) },
	} {
		s := spec
		s.ClientToken = ""
		mod(&s)
		if _, err := p.CreateDeployment(ctx, s); err == nil {
			t.Errorf("%s: CreateDeployment succeeded", name)
		}
	}
}
