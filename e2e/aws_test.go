package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/shared/certs"
)

const awsBucket = "ggfleet-e2e-artifacts"

// startAWSBroker starts the in-repo AWS fake and `ggfleet serve --provider
// aws` pointed at it, with static test credentials in the environment.
func startAWSBroker(t *testing.T, extra ...string) (*broker, *awsfake.Fake) {
	t.Helper()
	fake := awsfake.New(t)
	fake.CreateBucket(awsBucket)
	setFakeAWSEnv(t)
	rootCA := filepath.Join(t.TempDir(), "iot-root-ca.pem")
	if err := os.WriteFile(rootCA, []byte(fake.RootCAPEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--provider", "aws", "--aws-endpoint-url", fake.URL(), "--aws-iot-ca-file", rootCA,
		"--artifacts-bucket", awsBucket, "--artifacts-prefix", "fleet1"}, extra...)
	return startBroker(t, args...), fake
}

// setFakeAWSEnv gives child processes test credentials and keeps the SDK
// away from the machine's AWS configuration and from IMDS.
func setFakeAWSEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDE2ETEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "e2e-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", awsfake.Region) // the SDK's chain gives the broker its region
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// TestAWSProviderLifecycle runs the CDF API on --provider aws against the
// fake: templates, a core task, its artifacts in S3 and installer config
// with the AWS IoT endpoints, enrollment in aws mode, client devices, the
// events in EventBridge and the core's deletion.
func TestAWSProviderLifecycle(t *testing.T) {
	b, fake := startAWSBroker(t)
	const name = "aws-core-1"

	b.must(201, "POST", "/templates", map[string]any{"name": "AwsT",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})

	id := b.createCores(core(name, "configFileGenerator", "MANUAL_INSTALL"))
	task := b.waitTask("/coreTasks/"+id, 2*time.Minute)
	if task["taskStatus"] != "Success" {
		t.Fatalf("core task = %v; log:\n%s", task, b.log())
	}

	// The thing, its certificate and policy are in AWS IoT.
	var th thingView
	b.must(200, "GET", "/registry/things/"+name, nil).JSON(t, &th)
	if len(th.Principals) != 1 || len(th.Policies) == 0 {
		t.Fatalf("thing = %+v", th)
	}
	if fake.Calls("CreateThing") == 0 || fake.Calls("RegisterCertificate")+fake.Calls("RegisterCertificateWithoutCA") == 0 {
		t.Fatalf("no IoT calls reached the fake: %v", fake.AllCalls())
	}

	// Artifacts are in S3 under the prefix, and the API serves them.
	var c struct {
		Artifacts map[string]struct{ Bucket, Key string } `json:"artifacts"`
	}
	b.must(200, "GET", "/cores/"+name, nil).JSON(t, &c)
	for _, kind := range []string{"certs", "config"} {
		a := c.Artifacts[kind]
		if a.Bucket != awsBucket {
			t.Fatalf("artifact %s = %+v, want bucket %s", kind, a, awsBucket)
		}
		if _, _, ok := fake.Object(awsBucket, "fleet1/"+a.Key); !ok {
			t.Fatalf("artifact %s: s3://%s/fleet1/%s is missing", kind, awsBucket, a.Key)
		}
	}
	// Downloads redirect to a short-lived presigned S3 URL.
	noRedirect := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for key, want := range map[string]int{c.Artifacts["certs"].Key: http.StatusTemporaryRedirect, "greengrass2/artifacts/nope/nope/certs.zip": http.StatusNotFound} {
		req, _ := http.NewRequest("GET", b.url+"/artifacts/"+key, nil)
		req.Header.Set("Authorization", "Bearer "+b.token)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || (want == http.StatusTemporaryRedirect && !strings.Contains(resp.Header.Get("Location"), "X-Amz-Signature=")) {
			t.Fatalf("GET /artifacts/%s: %d location %q, want %d", key, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
	files := b.certsZip(name)
	if files["certs/private.key"] == "" || certID(t, files["certs/cert.pem"]) != th.Principals[0] {
		t.Fatalf("certs.zip = %v", files)
	}
	cfgYAML, _, _ := fake.Object(awsBucket, "fleet1/"+c.Artifacts["config"].Key)
	dataHost, _, _ := strings.Cut(fake.DataEndpoint(), ":")
	for _, want := range []string{"iotDataEndpoint: " + dataHost,
		awsfake.EndpointPrefix + ".credentials.iot." + awsfake.Region + ".amazonaws.com"} {
		if !strings.Contains(string(cfgYAML), want) {
			t.Fatalf("installer config does not name %s:\n%s", want, cfgYAML)
		}
	}

	// Enrollment in aws mode: the AWS IoT data endpoint, and the agent
	// policy on the new certificate.
	var tok struct {
		Token string `json:"token"`
	}
	b.must(201, "POST", "/cores/"+name+"/enrollmentTokens", map[string]any{}).JSON(t, &tok)
	key, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	var enr struct {
		CertificatePem string `json:"certificatePem"`
		MQTTEndpoint   string `json:"mqttEndpoint"`
		Mode           string `json:"mode"`
	}
	b.must(200, "POST", "/enroll", map[string]any{"coreName": name, "token": tok.Token, "csrPem": csr}).JSON(t, &enr)
	if enr.Mode != "aws" || enr.MQTTEndpoint != fake.DataEndpoint() {
		t.Fatalf("enroll = mode %q endpoint %q", enr.Mode, enr.MQTTEndpoint)
	}
	b.must(200, "GET", "/registry/things/"+name, nil).JSON(t, &th)
	if len(th.Principals) != 2 || !contains(th.Policies, "ggfleet-agent") {
		t.Fatalf("after enrollment thing = %+v, want 2 principals and the ggfleet-agent policy", th)
	}

	// Client devices: Greengrass refuses them until the nucleus has
	// connected; the fake plays that part.
	if err := fake.RegisterCoreDevice(name, awsfake.CoreHealthy); err != nil {
		t.Fatal(err)
	}
	r := b.must(202, "POST", "/cores/"+name+"/deviceTasks", map[string]any{"type": "Create", "devices": []map[string]any{
		{"name": "aws-dev-1", "provisioningTemplate": "ggfleet-client-device", "provisioningParameters": map[string]string{"ThingName": "aws-dev-1"}}}})
	dt := b.waitTask("/deviceTasks/"+r.Header.Get("x-taskid"), 2*time.Minute)
	if dt["taskStatus"] != "Success" {
		t.Fatalf("device task = %v", dt)
	}
	var assoc map[string]any
	b.must(200, "GET", "/registry/coreDevices/"+name+"/associatedClientDevices", nil).JSON(t, &assoc)
	if !strings.Contains(mustJSON(t, assoc), "aws-dev-1") {
		t.Fatalf("associated client devices = %v", assoc)
	}
	if fake.Calls("BatchAssociateClientDeviceWithCoreDevice") == 0 {
		t.Fatal("BatchAssociateClientDeviceWithCoreDevice was not called")
	}

	// Deployments are Greengrass V2 deployments to the template version's
	// thing group; outcomes come from the IoT job executions.
	b.awsDeploy(t, fake, name, "AwsT", "1", "SUCCEEDED", "Success")
	b.must(204, "PUT", "/templates/AwsT", map[string]any{"components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.5.0"}}})
	b.awsDeploy(t, fake, name, "AwsT", "2", "FAILED", "Failure")
	deps := fake.Deployments()
	if len(deps) != 2 || deps[0].TargetArn == deps[1].TargetArn {
		t.Fatalf("fake deployments = %+v", deps)
	}

	// Delete with deprovisioning: thing, certificates, core device gone.
	r = b.must(202, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Delete",
		"options": map[string]any{"deprovisionCores": true, "deprovisionClientDevices": true},
		"cores":   []map[string]any{{"name": name, "provisioningTemplate": "UNUSED"}}})
	del := b.waitTask("/coreTasks/"+r.Header.Get("x-taskid"), 2*time.Minute)
	if del["taskStatus"] != "Success" {
		t.Fatalf("delete task = %v; log:\n%s", del, b.log())
	}
	b.must(404, "GET", "/registry/things/"+name, nil)
	if fake.Calls("DeleteCoreDevice") == 0 || fake.Calls("DeleteCertificate") == 0 {
		t.Fatalf("delete made no DeleteCoreDevice/DeleteCertificate calls: %v", fake.AllCalls())
	}

	// Every event reached EventBridge with the CDF source.
	waitFor(t, time.Minute, "the CDF events in EventBridge", func() bool {
		seen := map[string]bool{}
		for _, e := range fake.Events() {
			if e.Source == "com.aws.cdf.greengrass2-provisioning" {
				seen[e.DetailType] = true
			}
		}
		return seen["Core Created Event"] && seen["Device Created Event"] && seen["Core Deleted Event"]
	})
}

// awsDeploy deploys a template version to core, lets the fake's job
// execution end with jobStatus, and checks the task ends with want.
func (b *broker) awsDeploy(t *testing.T, fake *awsfake.Fake, core, template, version, jobStatus, want string) {
	t.Helper()
	r := b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": template, "version": version},
		"targets": map[string]any{"thingNames": []string{core}}})
	taskID := r.Header.Get("x-taskid")
	group := "cdf_ggv2_deploymentForTemplate_" + template + "_" + version
	var dep awsfake.Deployment
	waitFor(t, time.Minute, "the Greengrass deployment of task "+taskID, func() bool {
		for _, d := range fake.Deployments() {
			if d.Tags["ggfleet:taskId"] == taskID {
				dep = d
				return true
			}
		}
		return false
	})
	if !strings.HasSuffix(dep.TargetArn, ":thinggroup/"+group) || len(dep.Components) != 1 || dep.Components["aws.greengrass.Cli"] == nil {
		t.Fatalf("deployment = %+v", dep)
	}
	waitFor(t, time.Minute, "the job execution on "+core, func() bool {
		n, err := fake.FinishJobExecutions(core, jobStatus)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	task := b.waitTask("/deploymentTasks/"+taskID, 2*time.Minute)
	if task["taskStatus"] != want {
		t.Fatalf("deployment task = %v, want %s; log:\n%s", task, want, b.log())
	}
	var th thingView
	b.must(200, "GET", "/registry/things/"+core, nil).JSON(t, &th)
	if !slices.Contains(th.ThingGroups, group) {
		t.Fatalf("core groups = %v, want %s", th.ThingGroups, group)
	}
}

// TestAWSProviderFlags: bad aws settings stop serve with a message naming
// the flag.
func TestAWSProviderFlags(t *testing.T) {
	setFakeAWSEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--provider", "aws"}, "--artifacts-bucket"},
		{[]string{"--provider", "aws", "--artifacts-bucket", "b1b", "--aws-quota", "NoSuchOp=3"}, "NoSuchOp"},
		{[]string{"--provider", "aws", "--artifacts-bucket", "b1b", "--aws-quota", "CreateThing=fast"}, "CreateThing=fast"},
		{[]string{"--provider", "aws", "--artifacts-bucket", "b1b", "--aws-endpoint-url", "ftp://x"}, "--aws-endpoint-url"},
	} {
		args := append([]string{"serve", "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--mqtt-listen", freeAddr(t)}, tc.args...)
		out, err := exec.Command(filepath.Join(binDir, "ggfleet"), args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("serve %v: err %v, output %q; want a failure naming %q", tc.args, err, out, tc.want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
