package provisioning

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// registrar is fakeProvider with the aws provider's extensions: it plays
// RegisterThing by evaluating the body with EvaluateTemplate and applying
// it to the fake's state (reusing what exists, as AWS does), and
// CreateKeysAndCertificate with a self-signed certificate.
type registrar struct {
	*fakeProvider
	t      testing.TB
	bodies []string
	params []map[string]string
	keys   int   // CreateKeysAndCertificate calls
	fail   error // the next RegisterThing fails with it
}

func (r *registrar) RegisterThing(ctx context.Context, body string, params map[string]string) (string, error) {
	r.bodies = append(r.bodies, body)
	r.params = append(r.params, params)
	if err := r.fail; err != nil {
		r.fail = nil
		return "", err
	}
	ev, err := EvaluateTemplate([]byte(body), params, "eu-west-1", "000000000000")
	if err != nil {
		return "", err
	}
	if ev.HasCDF {
		return "", errkind.New(errkind.Invalid, "unknown top-level section CDF")
	}
	name := ev.Thing.Name
	if _, err := r.DescribeThing(ctx, name); errkind.Is(err, errkind.NotFound) {
		if err := r.CreateThing(ctx, name, ev.Thing.ThingType, ev.Thing.Attributes); err != nil {
			return "", err
		}
	}
	for _, g := range ev.Thing.Groups {
		if err := r.AddThingToGroup(ctx, name, g); err != nil {
			return "", err
		}
	}
	c := ev.Certificate
	if c == nil {
		return "", nil
	}
	var id, pemText string
	switch {
	case c.PEM != "":
		if id, err = r.RegisterCertificate(ctx, c.PEM, c.CAPEM, c.Status); err != nil {
			return "", err
		}
		pemText = c.PEM
	case c.ID != "":
		d, err := r.DescribeCertificate(ctx, c.ID)
		if err != nil {
			return "", err
		}
		id, pemText = c.ID, d.PEM
	default:
		return "", errkind.New(errkind.Invalid, "the test registrar signs no CSR")
	}
	if err := r.AttachThingPrincipal(ctx, name, id); err != nil {
		return "", err
	}
	for _, p := range ev.Policies {
		if p.Document != "" {
			if _, err := r.PutPolicy(ctx, p.Name, p.Document); err != nil {
				return "", err
			}
		}
		if err := r.AttachPolicy(ctx, p.Name, id); err != nil {
			return "", err
		}
	}
	return pemText, nil
}

func (r *registrar) CreateKeysAndCertificate(ctx context.Context) (string, string, error) {
	r.t.Helper()
	r.keys++
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		r.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(r.keys)), Subject: pkix.Name{CommonName: "AWS IoT Certificate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		r.t.Fatal(err)
	}
	certPEM := certs.EncodeCertificate(der)
	keyPEM, err := certs.EncodeKey(key)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.RegisterCertificate(ctx, certPEM, "", "ACTIVE"); err != nil {
		r.t.Fatal(err)
	}
	return certPEM, keyPEM, nil
}

func newRegistrarEnv(t *testing.T) (*testEnv, *registrar) {
	t.Helper()
	e := newTestEnv(t)
	reg := &registrar{fakeProvider: e.prov, t: t}
	e.svc = New(Config{Store: e.store, Provider: reg, Issuer: e.iss, Region: "eu-west-1"})
	return e, reg
}

// awsCertTemplate lets AWS IoT make the key and certificate.
const awsCertTemplate = `{
  "Parameters": {"ThingName": {"Type": "String"}, "Site": {"Type": "String", "Default": "lab"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"site": {"Ref": "Site"}}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}}},
    "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol"}}
  },
  "CDF": {"createDeviceAWSCertificate": true}
}`

func TestRegisterThingBrokerCertificate(t *testing.T) {
	e, reg := newRegistrarEnv(t)
	ctx := context.Background()
	e.put(t, "tmpl", thingWithCert(`, "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol"}}`,
		`, "attachAdditionalPolicies": [{"name": "extra"}]`))
	e.policy(t, "pol", "extra")
	req := Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "core1"}}
	planned, err := e.svc.Prepare(ctx, req)
	if err != nil || planned == nil {
		t.Fatalf("Prepare = %v, %v", planned, err)
	}
	req.PlannedCertificate = planned
	want := certs.ID(mustCert(t, planned.CertificatePem))
	// A retry (the item re-run after a crash) adopts the thing: still one
	// thing and one certificate.
	for run := 1; run <= 2; run++ {
		res, err := e.svc.Provision(ctx, req)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if res.CertificateID != want || res.PrivateKeyPem != planned.PrivateKeyPem || res.CaCertificatePem != planned.CaCertificatePem ||
			!slices.Equal(res.Policies, []string{"extra", "pol"}) {
			t.Fatalf("run %d: result = %+v", run, res)
		}
		if len(reg.bodies) != run {
			t.Fatalf("run %d: %d RegisterThing calls", run, len(reg.bodies))
		}
		if things, certificates, _ := e.prov.counts(); things != 1 || certificates != 1 {
			t.Fatalf("run %d: %d things, %d certificates", run, things, certificates)
		}
	}
	body, params := reg.bodies[0], reg.params[0]
	if strings.Contains(body, `"CDF"`) || !strings.Contains(body, `"AWS::IoT::Policy"`) {
		t.Errorf("RegisterThing body = %s", body)
	}
	if params["CertificatePem"] != planned.CertificatePem || params["CaCertificatePem"] != planned.CaCertificatePem || params["ThingName"] != "core1" {
		t.Errorf("RegisterThing parameters = %v", params)
	}
	th, _ := e.prov.DescribeThing(ctx, "core1")
	if !slices.Equal(th.Principals, []string{want}) || !slices.Equal(th.Policies, []string{"extra", "pol"}) {
		t.Errorf("thing = %+v", th)
	}
	// Another plan does not take over the thing.
	other, err := e.svc.Prepare(ctx, Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "core1"}})
	if err != nil {
		t.Fatal(err)
	}
	req.PlannedCertificate = other
	if _, err := e.svc.Provision(ctx, req); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("other plan: err = %v, want Conflict", err)
	}
	if len(reg.bodies) != 2 {
		t.Errorf("the refused plan reached RegisterThing")
	}
}

func TestRegisterThingAWSCertificate(t *testing.T) {
	e, reg := newRegistrarEnv(t)
	ctx := context.Background()
	e.put(t, "aws", awsCertTemplate)
	e.policy(t, "pol")
	req := Request{Template: "aws", Parameters: map[string]string{"ThingName": "core2"}}
	planned, err := e.svc.Prepare(ctx, req)
	if err != nil || planned == nil || planned.PrivateKeyPem == "" || reg.keys != 1 {
		t.Fatalf("Prepare = %+v, %v (%d CreateKeysAndCertificate)", planned, err, reg.keys)
	}
	id := certs.ID(mustCert(t, planned.CertificatePem))
	req.PlannedCertificate = planned
	res, err := e.svc.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if reg.keys != 1 {
		t.Errorf("Provision with the plan made another key: %d calls", reg.keys)
	}
	if res.CertificateID != id || res.PrivateKeyPem != planned.PrivateKeyPem || res.CertificatePem != planned.CertificatePem {
		t.Errorf("result = %+v", res)
	}
	p := reg.params[0]
	if p["CertificateId"] != id || p["CertificateArn"] != "arn:aws:iot:eu-west-1:000000000000:cert/"+id || p["Site"] != "" {
		t.Errorf("RegisterThing parameters = %v (Site is left to its Default)", p)
	}
	var body struct {
		Parameters map[string]struct{ Type string }
	}
	if err := json.Unmarshal([]byte(reg.bodies[0]), &body); err != nil || body.Parameters["CertificateId"].Type != "String" {
		t.Errorf("the injected CertificateId is not declared in the body: %s (%v)", reg.bodies[0], err)
	}
	th, _ := e.prov.DescribeThing(ctx, "core2")
	if th.Attributes["site"] != "lab" || !slices.Equal(th.Principals, []string{id}) {
		t.Errorf("thing = %+v", th)
	}

	// A template that cannot be evaluated makes no key in AWS.
	broken := strings.Replace(awsCertTemplate, `"PolicyName": "pol"`, `"PolicyName": {"Ref": "Pol"}`, 1)
	e.put(t, "broken", strings.Replace(broken, `"Parameters": {`, `"Parameters": {"Pol": {"Type": "String"}, `, 1))
	if _, err := e.svc.Prepare(ctx, Request{Template: "broken", Parameters: map[string]string{"ThingName": "core3"}}); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("broken template: err = %v, want Invalid", err)
	}
	if reg.keys != 1 {
		t.Errorf("an invalid template made a key in AWS")
	}
}

func TestAWSCertificateNeedsAWS(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, "aws", awsCertTemplate)
	e.policy(t, "pol")
	req := Request{Template: "aws", Parameters: map[string]string{"ThingName": "core4"}}
	for name, call := range map[string]func() error{
		"Prepare":   func() error { _, err := e.svc.Prepare(context.Background(), req); return err },
		"Provision": func() error { _, err := e.svc.Provision(context.Background(), req); return err },
	} {
		err := call()
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), "needs --provider aws") {
			t.Errorf("%s: err = %v, want Invalid naming --provider aws", name, err)
		}
	}
	if things, certificates, _ := e.prov.counts(); things != 0 || certificates != 0 {
		t.Error("local mode made something")
	}
}

func TestRegisterThingTemplateWithoutCertificateResource(t *testing.T) {
	e, reg := newRegistrarEnv(t)
	ctx := context.Background()
	e.put(t, "bare", `{
  "Parameters": {"ThingName": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": ["site-a"]}}},
  "CDF": {"createDeviceCertificate": true}
}`)
	res, err := e.svc.Provision(ctx, Request{Template: "bare", Parameters: map[string]string{"ThingName": "core5"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reg.bodies[0], cdfCertificateLogical) {
		t.Errorf("no certificate resource was added to the body: %s", reg.bodies[0])
	}
	th, _ := e.prov.DescribeThing(ctx, "core5")
	if !slices.Equal(th.Principals, []string{res.CertificateID}) || !slices.Equal(th.Groups, []string{"site-a"}) {
		t.Errorf("thing = %+v, result %+v", th, res)
	}
}

func TestRegisterThingFailures(t *testing.T) {
	ctx := context.Background()
	tmpl := thingWithCert("", `, "attachAdditionalPolicies": [{"name": "extra"}]`)
	tests := []struct {
		name  string
		setup func(e *testEnv, reg *registrar)
		kind  errkind.Kind
		msg   string
		calls int
	}{
		{"missing additional policy", func(*testEnv, *registrar) {}, errkind.Invalid, `policy "extra"`, 0},
		{"RegisterThing refuses", func(e *testEnv, reg *registrar) {
			e.policy(t, "extra")
			reg.fail = errkind.New(errkind.Invalid, "Thing group x cannot be found.")
		}, errkind.Invalid, "RegisterThing refused", 1},
		{"post-step fails", func(e *testEnv, _ *registrar) {
			e.policy(t, "extra")
			e.prov.failAttachPolicy = true
		}, errkind.Unavailable, "attach policy", 1},
		{"RegisterThing unavailable", func(e *testEnv, reg *registrar) {
			e.policy(t, "extra")
			reg.fail = errkind.New(errkind.Unavailable, "ThrottlingException")
		}, errkind.Unavailable, "ThrottlingException", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, reg := newRegistrarEnv(t)
			e.put(t, "tmpl", tmpl)
			tc.setup(e, reg)
			_, err := e.svc.Provision(ctx, Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "core6"}})
			if !errkind.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.kind, tc.msg)
			}
			if len(reg.bodies) != tc.calls {
				t.Errorf("%d RegisterThing calls, want %d", len(reg.bodies), tc.calls)
			}
			if things, certificates, _ := e.prov.counts(); things != 0 || certificates != 0 {
				t.Errorf("left %d things and %d certificates behind", things, certificates)
			}
		})
	}
}

// A transient failure after RegisterThing with a planned certificate keeps
// what was made: the retry adopts it and finishes, and the AWS-made
// certificate whose key only the plan holds is not deleted.
func TestRegisterThingTransientFailureKeepsPlannedThing(t *testing.T) {
	e, reg := newRegistrarEnv(t)
	ctx := context.Background()
	e.put(t, "aws", strings.Replace(awsCertTemplate, `"CDF": {"createDeviceAWSCertificate": true}`,
		`"CDF": {"createDeviceAWSCertificate": true, "attachAdditionalPolicies": [{"name": "extra"}]}`, 1))
	e.policy(t, "pol", "extra")
	req := Request{Template: "aws", Parameters: map[string]string{"ThingName": "core7"}}
	planned, err := e.svc.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	req.PlannedCertificate = planned
	e.prov.failAttachPolicy = true
	if _, err := e.svc.Provision(ctx, req); !errkind.Is(err, errkind.Unavailable) {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if things, certificates, _ := e.prov.counts(); things != 1 || certificates != 1 {
		t.Fatalf("after the transient failure: %d things, %d certificates, want the thing and its certificate kept", things, certificates)
	}
	e.prov.failAttachPolicy = false
	res, err := e.svc.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.CertificateID != certs.ID(mustCert(t, planned.CertificatePem)) || !slices.Equal(res.Policies, []string{"extra", "pol"}) || reg.keys != 1 {
		t.Fatalf("retry result = %+v, %d keys made", res, reg.keys)
	}
}

// A createDeviceAWSCertificate template may leave the certificate resource
// out: the broker adds one for the certificate AWS made.
func TestRegisterThingAWSCertificateWithoutResource(t *testing.T) {
	e, reg := newRegistrarEnv(t)
	ctx := context.Background()
	e.put(t, "aws-bare", `{
  "Parameters": {"ThingName": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol"}}
  },
  "CDF": {"createDeviceAWSCertificate": true}
}`)
	e.policy(t, "pol")
	res, err := e.svc.Provision(ctx, Request{Template: "aws-bare", Parameters: map[string]string{"ThingName": "core8"}})
	if err != nil {
		t.Fatal(err)
	}
	if reg.keys != 1 || !strings.Contains(reg.bodies[0], `"CertificateId":{"Ref":"CertificateId"}`) {
		t.Fatalf("%d keys; body %s", reg.keys, reg.bodies[0])
	}
	th, _ := e.prov.DescribeThing(ctx, "core8")
	if !slices.Equal(th.Principals, []string{res.CertificateID}) || !slices.Equal(th.Policies, []string{"pol"}) || res.PrivateKeyPem == "" {
		t.Fatalf("thing = %+v, result %+v", th, res)
	}
}

// registerDeviceCertificateWithoutCA registers the device's certificate
// before RegisterThing, which then refers to it by id.
func TestRegisterThingWithoutCA(t *testing.T) {
	e, reg := newRegistrarEnv(t)
	ctx := context.Background()
	e.put(t, "noca", `{
  "Parameters": {"ThingName": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}}}
  },
  "CDF": {"registerDeviceCertificateWithoutCA": true}
}`)
	pemText, _ := issueFor(t, e, "core9")
	res, err := e.svc.Provision(ctx, Request{Template: "noca", Parameters: map[string]string{"ThingName": "core9"},
		CDF: &CDFParameters{CertificatePem: pemText, CertificateStatus: "ACTIVE"}})
	if err != nil {
		t.Fatal(err)
	}
	id := certs.ID(mustCert(t, pemText))
	if res.CertificateID != id || res.CertificatePem != pemText || reg.params[0]["CertificateId"] != id {
		t.Fatalf("result = %+v, parameters %v", res, reg.params[0])
	}
	th, _ := e.prov.DescribeThing(ctx, "core9")
	if !slices.Equal(th.Principals, []string{id}) {
		t.Fatalf("thing = %+v", th)
	}
}

func TestEvaluateTemplate(t *testing.T) {
	body := `{
  "Parameters": {"ThingName": {"Type": "String"}, "Groups": {"Type": "CommaDelimitedList", "Default": "a,b"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Join": ["-", ["gg", {"Ref": "ThingName"}]]},
      "ThingGroups": {"Ref": "Groups"}}, "OverrideSettings": {"AttributePayload": "MERGE"}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Fn::Sub": "${Id}"}, "Status": "INACTIVE"}},
    "pol": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": {"Statement": [{"Resource": {"Fn::Sub": "arn:aws:iot:${AWS::Region}:${AWS::AccountId}:client/x"}}]}}}
  }
}`
	body = strings.Replace(body, `"Groups": {`, `"Id": {"Type": "String"}, "Groups": {`, 1)
	ev, err := EvaluateTemplate([]byte(body), map[string]string{"ThingName": "x", "Id": "abc"}, "eu-west-1", "123456789012")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Thing.Name != "gg-x" || !slices.Equal(ev.Thing.Groups, []string{"a", "b"}) || ev.Thing.Override["AttributePayload"] != "MERGE" || ev.HasCDF {
		t.Errorf("thing = %+v", ev.Thing)
	}
	if ev.Certificate == nil || ev.Certificate.ID != "abc" || ev.Certificate.Status != "INACTIVE" {
		t.Errorf("certificate = %+v", ev.Certificate)
	}
	if len(ev.Policies) != 1 || !strings.Contains(ev.Policies[0].Document, "arn:aws:iot:eu-west-1:123456789012:client/x") {
		t.Errorf("policies = %+v", ev.Policies)
	}
	conditional := `{
  "Parameters": {"ThingName": {"Type": "String"}, "Env": {"Type": "String", "Default": "dev"}},
  "Conditions": {"prod": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}, "notProd": {"Fn::Not": [{"Condition": "prod"}]},
    "either": {"Fn::Or": [{"Condition": "prod"}, {"Condition": "notProd"}]}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {
    "ThingName": {"Fn::If": ["prod", {"Fn::Sub": "p-${ThingName}"}, {"Ref": "ThingName"}]},
    "AttributePayload": {"always": {"Fn::If": ["either", "yes", "no"]}, "np": {"Fn::If": ["notProd", "1", "0"]}}}}}
}`
	for env, want := range map[string]string{"prod": "p-x/yes/0", "dev": "x/yes/1"} {
		ev, err := EvaluateTemplate([]byte(conditional), map[string]string{"ThingName": "x", "Env": env}, "r", "a")
		if err != nil {
			t.Fatal(err)
		}
		if got := ev.Thing.Name + "/" + ev.Thing.Attributes["always"] + "/" + ev.Thing.Attributes["np"]; got != want {
			t.Errorf("Env=%s: %s, want %s", env, got, want)
		}
	}
	for name, tc := range map[string]struct {
		body   string
		params map[string]string
		want   string
	}{
		"missing parameter": {body, map[string]string{"Id": "abc"}, `"ThingName"`},
		"not JSON":          {"{", nil, "not valid JSON"},
		"override value":    {strings.Replace(body, `"MERGE"`, `true`, 1), map[string]string{"ThingName": "x", "Id": "a"}, "OverrideSettings.AttributePayload"},
		"resource type":     {strings.Replace(body, "AWS::IoT::Policy", "AWS::S3::Bucket", 1), map[string]string{"ThingName": "x", "Id": "a"}, "AWS::S3::Bucket"},
	} {
		if _, err := EvaluateTemplate([]byte(tc.body), tc.params, "eu-west-1", "1"); !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), tc.want) {
			t.Errorf("%s: err = %v, want Invalid naming %s", name, err, tc.want)
		}
	}
}
