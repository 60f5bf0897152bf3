package e2e

import (
	"crypto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// awsCertTemplate is a provisioning template whose device key and
// certificate AWS IoT makes (CDF.createDeviceAWSCertificate).
const awsCertTemplate = `{
  "Parameters": {"ThingName": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": ["aws-made"]}},
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}, "Status": "ACTIVE"}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "ggfleet-core-policy"}}
  },
  "CDF": {"createDeviceAWSCertificate": true}
}`

// TestAWSProvisioningRegisterThing runs core provisioning on --provider
// aws against the fake: each core is one RegisterThing (the broker's CA
// makes one core's certificate, AWS's CreateKeysAndCertificate the
// other's), a failing RegisterThing is retried without making a second
// thing or certificate, and POST /enroll gets its certificate from
// CreateCertificateFromCsr and refuses a CSR for another name.
func TestAWSProvisioningRegisterThing(t *testing.T) {
	b, fake := startAWSBroker(t)
	b.must(201, "PUT", "/provisioningTemplates/aws-cert", awsCertTemplate)

	// The broker's own start-up calls (its identity, policies) are not counted.
	base := fake.AllCalls()
	calls := func(op string) int { return fake.Calls(op) - base[op] }
	// Three internal failures: the SDK's retries ride them out.
	for range 3 {
		fake.FailNext("RegisterThing", "InternalFailureException")
	}
	const brokerMade, awsMade = "rt-core-1", "rt-core-2"
	id := b.createCores(core(brokerMade), map[string]any{"name": awsMade, "provisioningTemplate": "aws-cert",
		"provisioningParameters": map[string]string{"ThingName": awsMade}})
	task := b.waitTask("/coreTasks/"+id, 3*time.Minute)
	if task["taskStatus"] != "Success" {
		t.Fatalf("core task = %v; log:\n%s", task, b.log())
	}
	if got := calls("RegisterThing"); got != 2+3 {
		t.Errorf("RegisterThing calls = %d, want 2 and the 3 failed ones", got)
	}
	// RegisterThing made each thing and certificate once, despite the retries.
	for op, want := range map[string]int{"CreateThing": 2, "CreateKeysAndCertificate": 1, "RegisterCertificate": 1, "AttachThingPrincipal": 2} {
		if got := calls(op); got != want {
			t.Errorf("Calls(%s) = %d during the task, want %d (all: %v)", op, got, want, fake.AllCalls())
		}
	}

	// The broker-made certificate.
	var th thingView
	b.must(200, "GET", "/registry/things/"+brokerMade, nil).JSON(t, &th)
	files := b.certsZip(brokerMade)
	if len(th.Principals) != 1 || th.Principals[0] != certID(t, files["certs/cert.pem"]) || !contains(th.Policies, "ggfleet-core-policy") {
		t.Fatalf("%s = %+v", brokerMade, th)
	}
	// The AWS-made certificate: its private key is in certs.zip only.
	b.must(200, "GET", "/registry/things/"+awsMade, nil).JSON(t, &th)
	files = b.certsZip(awsMade)
	c, err := certs.ParseCertificate(files["certs/cert.pem"])
	if err != nil {
		t.Fatalf("certs.zip of %s: %v", awsMade, err)
	}
	key, err := certs.ParseKey(files["certs/private.key"])
	if err != nil {
		t.Fatalf("certs.zip of %s has no usable private key: %v", awsMade, err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) || c.Subject.CommonName != awsfake.AWSIssuedSubject {
		t.Fatalf("%s: certificate %q does not match its key", awsMade, c.Subject.CommonName)
	}
	if len(th.Principals) != 1 || th.Principals[0] != certs.ID(c) || !slices.Equal(th.ThingGroups, []string{"aws-made"}) ||
		!contains(th.Policies, "ggfleet-core-policy") {
		t.Fatalf("%s = %+v", awsMade, th)
	}
	if strings.Contains(b.log(), strings.TrimSpace(strings.Split(files["certs/private.key"], "\n")[1])) {
		t.Fatal("the AWS-made private key is in the broker's log")
	}

	// A crash while RegisterThing is in flight: the fake finishes the call
	// (it made the thing) after the broker died; the restarted broker
	// resumes the item with the saved plan and adopts the thing, so there
	// is still one thing, one certificate and one CreateKeysAndCertificate.
	const crashed = "rt-core-3"
	base = fake.AllCalls()
	fake.Latency(2 * time.Second)
	id = b.createCores(map[string]any{"name": crashed, "provisioningTemplate": "aws-cert",
		"provisioningParameters": map[string]string{"ThingName": crashed}})
	waitFor(t, time.Minute, "RegisterThing of "+crashed, func() bool { return calls("RegisterThing") > 0 })
	b.kill()
	fake.Latency(0)
	waitFor(t, time.Minute, "the interrupted RegisterThing to finish in the fake", func() bool {
		th, ok := fake.Thing(crashed)
		return ok && len(th.Principals) == 1
	})
	b.restart()
	task = b.waitTask("/coreTasks/"+id, 3*time.Minute)
	if task["taskStatus"] != "Success" {
		t.Fatalf("core task after the crash = %v; log:\n%s", task, b.log())
	}
	if !strings.Contains(b.log(), "resuming provisioning of an existing thing") {
		t.Errorf("the restarted broker did not adopt the thing RegisterThing made; log:\n%s", b.log())
	}
	b.must(200, "GET", "/registry/things/"+crashed, nil).JSON(t, &th)
	files = b.certsZip(crashed)
	if len(th.Principals) != 1 || th.Principals[0] != certID(t, files["certs/cert.pem"]) || files["certs/private.key"] == "" {
		t.Fatalf("after the crash %s = %+v", crashed, th)
	}
	if calls("CreateKeysAndCertificate") != 1 || calls("CreateThing") != 1 || calls("RegisterThing") < 2 {
		t.Fatalf("after the crash: CreateKeysAndCertificate %d, CreateThing %d, RegisterThing %d since the task began",
			calls("CreateKeysAndCertificate"), calls("CreateThing"), calls("RegisterThing"))
	}

	// Enrollment: AWS certifies the device's CSR.
	var tok struct {
		Token string `json:"token"`
	}
	b.must(201, "POST", "/cores/"+brokerMade+"/enrollmentTokens", map[string]any{}).JSON(t, &tok)
	devKey, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	wrongCSR, err := certs.NewCSR(devKey, "someone-else")
	if err != nil {
		t.Fatal(err)
	}
	r := b.must(400, "POST", "/enroll", map[string]any{"coreName": brokerMade, "token": tok.Token, "csrPem": wrongCSR})
	if msg := r.Message(); !strings.Contains(msg, "common name") || !strings.Contains(msg, brokerMade) {
		t.Fatalf("enroll with a CSR for another name: %q", msg)
	}
	csr, err := certs.NewCSR(devKey, brokerMade)
	if err != nil {
		t.Fatal(err)
	}
	var enr struct {
		CertificatePem string `json:"certificatePem"`
		Mode           string `json:"mode"`
	}
	b.must(200, "POST", "/enroll", map[string]any{"coreName": brokerMade, "token": tok.Token, "csrPem": csr}).JSON(t, &enr)
	if calls("CreateCertificateFromCsr") != 1 || enr.Mode != "aws" {
		t.Fatalf("CreateCertificateFromCsr calls %d, mode %q", calls("CreateCertificateFromCsr"), enr.Mode)
	}
	issued, err := certs.ParseCertificate(enr.CertificatePem)
	if err != nil || issued.Subject.CommonName != brokerMade || !devKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(issued.PublicKey) {
		t.Fatalf("enrolled certificate %v (%v)", issued, err)
	}
	issuerPEM, err := fake.IssuerPEM()
	if err != nil {
		t.Fatal(err)
	}
	if ca, err := certs.ParseCertificate(issuerPEM); err != nil || issued.CheckSignatureFrom(ca) != nil {
		t.Fatalf("the enrolled certificate was not signed by AWS (the fake's CA): %v", err)
	}
	b.must(200, "GET", "/registry/things/"+brokerMade, nil).JSON(t, &th)
	if len(th.Principals) != 2 || !contains(th.Principals, certs.ID(issued)) || !contains(th.Policies, "ggfleet-agent") {
		t.Fatalf("after enrollment %s = %+v", brokerMade, th)
	}
}

// TestAWSCertificateTemplateInLocalMode: the embedded provider has no AWS
// to make a key, so a core whose template asks for one fails with a
// message saying what it needs, and nothing is made.
func TestAWSCertificateTemplateInLocalMode(t *testing.T) {
	b := startBroker(t)
	b.must(201, "PUT", "/provisioningTemplates/aws-cert", awsCertTemplate)
	id := b.createCores(map[string]any{"name": "local-aws-1", "provisioningTemplate": "aws-cert",
		"provisioningParameters": map[string]string{"ThingName": "local-aws-1"}})
	task := b.waitTask("/coreTasks/"+id, 2*time.Minute)
	items, _ := task["cores"].([]any)
	if task["taskStatus"] != "Failure" || len(items) != 1 {
		t.Fatalf("task = %v", task)
	}
	item := items[0].(map[string]any)
	if msg, _ := item["statusMessage"].(string); item["taskStatus"] != "Failure" || !strings.Contains(msg, "needs --provider aws") {
		t.Fatalf("item = %v", item)
	}
	b.must(404, "GET", "/registry/things/local-aws-1", nil)
}
