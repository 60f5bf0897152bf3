package aws_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/smithy-go"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/providertest"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// errCode is the AWS error code of an SDK error, or "".
func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func registerThing(ctx context.Context, c *iot.Client, body string, params map[string]string) (*iot.RegisterThingOutput, error) {
	return c.RegisterThing(ctx, &iot.RegisterThingInput{TemplateBody: &body, Parameters: params})
}

// thingTemplate is a RegisterThing template: a thing with an attribute and
// groups, a certificate from its PEM, and a policy from a document.
const thingTemplate = `{
  "Parameters": {"ThingName": {"Type": "String"}, "CertificatePem": {"Type": "String"}, "Site": {"Type": "String", "Default": "lab"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"},
      "AttributePayload": {"site": {"Ref": "Site"}}, "ThingGroups": ["fleet-a"]}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "CertificatePem"}, "Status": "ACTIVE"}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol-a"` + policyDocument + `}}
  }
}`

// policyDocument is thingTemplate's policy document property.
const policyDocument = `,
      "PolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}`

func TestFakeRegisterThingValidation(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	c := rawIoT(fake)
	fake.SetQuota("RegisterThing", 0) // the raw client does not retry throttling
	if err := p.CreateThingGroup(ctx, "fleet-a", ""); err != nil {
		t.Fatal(err)
	}
	pemText := providertest.NewIssuer(t).Issue(t, "v1")
	ok := map[string]string{"ThingName": "v1", "CertificatePem": pemText}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range ok {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name   string
		body   string
		params map[string]string
		code   string
		msg    string
	}{
		{"empty template body", "", ok, "InvalidRequestException", "not valid JSON"},
		{"template body too long", thingTemplate + strings.Repeat(" ", 10240), ok, "InvalidRequestException", "templateBody"},
		{"parameter too long", thingTemplate, with("Site", strings.Repeat("x", 4097)), "InvalidRequestException", "Site"},
		{"not JSON", "{", ok, "InvalidRequestException", "not valid JSON"},
		{"CDF section", strings.Replace(thingTemplate, `"Resources"`, `"CDF": {"createDeviceCertificate": true}, "Resources"`, 1), ok, "InvalidRequestException", "CDF"},
		{"resource type", strings.Replace(thingTemplate, "AWS::IoT::Policy", "AWS::IAM::Role", 1), ok, "InvalidRequestException", "AWS::IAM::Role"},
		{"intrinsic function", strings.Replace(thingTemplate, `{"Ref": "Site"}`, `{"Fn::GetAtt": ["x", "y"]}`, 1), ok, "InvalidRequestException", "Fn::GetAtt"},
		{"missing parameter", thingTemplate, map[string]string{"ThingName": "v1"}, "InvalidRequestException", "CertificatePem"},
		{"thing name", thingTemplate, with("ThingName", "bad name"), "InvalidRequestException", "bad name"},
		{"override key", strings.Replace(thingTemplate, `"Properties": {"ThingName"`, `"OverrideSettings": {"ThingName": "REPLACE"}, "Properties": {"ThingName"`, 1), ok, "InvalidRequestException", "OverrideSettings"},
		{"override value", strings.Replace(thingTemplate, `"Properties": {"ThingName"`, `"OverrideSettings": {"AttributePayload": "KEEP"}, "Properties": {"ThingName"`, 1), ok, "InvalidRequestException", "KEEP"},
		{"missing group", strings.Replace(thingTemplate, "fleet-a", "fleet-b", 1), ok, "ResourceRegistrationFailureException", "fleet-b"},
		{"policy property", strings.Replace(thingTemplate, `"PolicyDocument"`, `"Description"`, 1), ok, "InvalidRequestException", "Description"},
		{"policy by name does not exist", strings.Replace(thingTemplate, policyDocument, ``, 1), ok, "ResourceRegistrationFailureException", "pol-a"},
		{"certificate", thingTemplate, with("CertificatePem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "CertificateValidationException", "not valid"},
		{"unknown certificate id", strings.Replace(thingTemplate, `"CertificatePem": {"Ref": "CertificatePem"}`, `"CertificateId": "`+strings.Repeat("ab", 32)+`"`, 1), ok, "ResourceRegistrationFailureException", "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := registerThing(ctx, c, tc.body, tc.params)
			if errCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %s mentioning %q", err, tc.code, tc.msg)
			}
			if _, err := p.DescribeThing(ctx, "v1"); !errkind.Is(err, errkind.NotFound) {
				t.Fatalf("a refused RegisterThing left thing v1 behind (%v)", err)
			}
		})
	}
	// The provider maps refusals to errkind.Invalid.
	if _, err := p.RegisterThing(ctx, strings.Replace(thingTemplate, "fleet-a", "fleet-b", 1), ok); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("provider: err = %v, want Invalid", err)
	}
}

func TestFakeRegisterThingReusesResources(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	if err := p.CreateThingGroup(ctx, "fleet-a", ""); err != nil {
		t.Fatal(err)
	}
	pemText := providertest.NewIssuer(t).Issue(t, "r1")
	params := map[string]string{"ThingName": "r1", "CertificatePem": pemText}
	for range 2 {
		got, err := p.RegisterThing(ctx, thingTemplate, params)
		if err != nil {
			t.Fatal(err)
		}
		if got != pemText {
			t.Fatalf("RegisterThing returned certificate %q", got)
		}
	}
	th, err := p.DescribeThing(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if th.CreatedAt.IsZero() {
		t.Error("a thing RegisterThing made has no CreatedAt")
	}
	if th.Attributes["site"] != "lab" || !slices.Equal(th.Groups, []string{"fleet-a"}) || len(th.Principals) != 1 ||
		th.Principals[0] != certIDOf(t, pemText) || !slices.Equal(th.Policies, []string{"pol-a"}) {
		t.Fatalf("thing = %+v", th)
	}
	// RegisterThing's own actions are counted once each.
	for op, want := range map[string]int{"RegisterThing": 2, "CreateThing": 1, "RegisterCertificateWithoutCA": 1, "CreatePolicy": 1, "AttachPolicy": 1, "AttachThingPrincipal": 1, "AddThingToThingGroup": 1} {
		if got := fake.Calls(op); got != want {
			t.Errorf("Calls(%s) = %d, want %d", op, got, want)
		}
	}
	// OverrideSettings decide what happens to an existing thing.
	override := func(v string) string {
		return strings.Replace(thingTemplate, `"Properties": {"ThingName"`, `"OverrideSettings": {"AttributePayload": "`+v+`"}, "Properties": {"ThingName"`, 1)
	}
	params["Site"] = "dock"
	if _, err := p.RegisterThing(ctx, override("FAIL"), params); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("FAIL with other attributes: err = %v, want Invalid", err)
	}
	if _, err := p.RegisterThing(ctx, thingTemplate, params); err != nil {
		t.Fatal(err)
	}
	if th, _ := p.DescribeThing(ctx, "r1"); th.Attributes["site"] != "lab" {
		t.Fatalf("DO_NOTHING changed the attributes: %v", th.Attributes)
	}
	if _, err := p.RegisterThing(ctx, override("REPLACE"), params); err != nil {
		t.Fatal(err)
	}
	if th, _ := p.DescribeThing(ctx, "r1"); th.Attributes["site"] != "dock" {
		t.Fatalf("REPLACE kept the attributes: %v", th.Attributes)
	}

	// A CSR in the template is signed anew on every call, as in AWS.
	key, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := certs.NewCSR(key, "r2")
	if err != nil {
		t.Fatal(err)
	}
	csrTemplate := strings.Replace(thingTemplate, `"CertificatePem": {"Ref": "CertificatePem"}`, `"CertificateSigningRequest": {"Ref": "Csr"}`, 1)
	csrTemplate = strings.Replace(csrTemplate, `"CertificatePem": {"Type": "String"}`, `"Csr": {"Type": "String"}`, 1)
	first, err := p.RegisterThing(ctx, csrTemplate, map[string]string{"ThingName": "r2", "Csr": csrPEM})
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificate(first)
	if err != nil || c.Subject.CommonName != "r2" {
		t.Fatalf("signed certificate %v (%v)", c, err)
	}
}

func certIDOf(t *testing.T, pemText string) string {
	t.Helper()
	c, err := certs.ParseCertificate(pemText)
	if err != nil {
		t.Fatal(err)
	}
	return certs.ID(c)
}

func TestFakeKeysAndCertificates(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	issuerPEM, err := fake.IssuerPEM()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(issuerPEM))
	verify := func(c *x509.Certificate) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	}

	certPEM, keyPEM, err := p.CreateKeysAndCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.ParseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != awsfake.AWSIssuedSubject || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) || verify(c) != nil {
		t.Fatalf("certificate %q, key matches %v, chain %v", c.Subject.CommonName, key.Public(), verify(c))
	}
	if d, err := p.DescribeCertificate(ctx, certs.ID(c)); err != nil || d.Status != "ACTIVE" {
		t.Fatalf("DescribeCertificate = %+v, %v", d, err)
	}

	devKey, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := certs.NewCSR(devKey, "core-x")
	if err != nil {
		t.Fatal(err)
	}
	id, fromCSR, err := p.CreateCertificateFromCsr(ctx, csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err = certs.ParseCertificate(fromCSR)
	if err != nil || c.Subject.CommonName != "core-x" || certs.ID(c) != id || verify(c) != nil {
		t.Fatalf("certificate from CSR: %v, id %s (%v)", c, id, err)
	}
	if d, err := p.DescribeCertificate(ctx, id); err != nil || d.Status != "ACTIVE" {
		t.Fatalf("DescribeCertificate = %+v, %v", d, err)
	}
	// Deleting it (what a failed enrollment does) removes it.
	if err := p.DeleteCertificate(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DescribeCertificate(ctx, id); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("after DeleteCertificate: %v", err)
	}

	// What AWS refuses.
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "w"}}, weak)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawIoT(fake)
	for name, csr := range map[string]string{
		"empty":    "",
		"not PEM":  "hello",
		"RSA-1024": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: weakDER})),
		"too long": strings.Repeat("A", 5000),
	} {
		in := &iot.CreateCertificateFromCsrInput{SetAsActive: true, CertificateSigningRequest: &csr}
		if _, err := raw.CreateCertificateFromCsr(ctx, in); errCode(err) != "InvalidRequestException" {
			t.Errorf("%s CSR: err = %v, want InvalidRequestException", name, err)
		}
	}
	// Without setAsActive the certificate is INACTIVE.
	out, err := raw.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := p.DescribeCertificate(ctx, *out.CertificateId); err != nil || d.Status != "INACTIVE" {
		t.Fatalf("without setAsActive: %+v, %v", d, err)
	}
}

// memTemplates is an in-memory provisioning.Store.
type memTemplates struct {
	mu   sync.Mutex
	docs map[string][]byte
}

func (m *memTemplates) PutProvisioningTemplate(_ context.Context, name string, doc []byte, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, had := m.docs[name]
	m.docs[name] = doc
	return !had, nil
}

func (m *memTemplates) CreateProvisioningTemplate(ctx context.Context, name string, doc []byte, now time.Time) (bool, error) {
	m.mu.Lock()
	_, had := m.docs[name]
	m.mu.Unlock()
	if had {
		return false, nil
	}
	return m.PutProvisioningTemplate(ctx, name, doc, now)
}

func (m *memTemplates) GetProvisioningTemplate(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.docs[name]
	if !ok {
		return nil, errkind.New(errkind.NotFound, "template %q not found", name)
	}
	return d, nil
}

func (m *memTemplates) ListProvisioningTemplates(context.Context) ([]provisioning.TemplateInfo, error) {
	return nil, nil
}

func (m *memTemplates) DeleteProvisioningTemplate(context.Context, string) error { return nil }

// testAuthority is a provisioning.Issuer: one self-signed CA.
type testAuthority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  string
}

func newTestAuthority(t *testing.T) *testAuthority {
	t.Helper()
	key, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testAuthority{cert: c, key: key, pem: certs.EncodeCertificate(der)}
}

func (a *testAuthority) Issue(_ context.Context, _ string, pub crypto.PublicKey, subject pkix.Name, days int) (string, string, error) {
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().AddDate(0, 0, days)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return "", "", err
	}
	return certs.EncodeCertificate(der), a.pem, nil
}

func (a *testAuthority) DefaultKeyAlgorithm(context.Context, string) (string, error) {
	return "EC-P256", nil
}

// TestProvisionThroughRegisterThing runs the provisioning service on the
// aws provider against the fake: one RegisterThing per thing, retried
// through an injected failure without making anything twice, and
// createDeviceAWSCertificate through CreateKeysAndCertificate.
func TestProvisionThroughRegisterThing(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	store := &memTemplates{docs: map[string][]byte{}}
	auth := newTestAuthority(t)
	if err := p.RegisterCA(ctx, auth, certs.ID(auth.cert), auth.pem); err != nil {
		t.Fatal(err)
	}
	svc := provisioning.New(provisioning.Config{Store: store, Provider: p, Issuer: auth, Region: awsfake.Region, AccountID: awsfake.Account})
	if err := svc.SeedDefaults(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Put(ctx, "aws-cert", []byte(`{
  "Parameters": {"ThingName": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": ["site-1"]}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "ggfleet-core-policy"}}
  },
  "CDF": {"createDeviceAWSCertificate": true, "attachAdditionalPolicies": [{"name": "extra-pol", "document": {"Version": "2012-10-17", "Statement": []}}]}
}`)); err != nil {
		t.Fatal(err)
	}

	// The default template: the broker's CA makes the certificate; a
	// failed RegisterThing is retried by the SDK.
	req := provisioning.Request{Template: provisioning.DefaultCoreTemplate, Parameters: map[string]string{"ThingName": "gg-1"}}
	planned, err := svc.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	req.PlannedCertificate = planned
	fake.FailNext("RegisterThing", "InternalFailureException")
	res, err := svc.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if fake.Calls("RegisterThing") != 2 || fake.Calls("CreateThing") != 1 || fake.Calls("RegisterCertificate") != 1 {
		t.Fatalf("calls = %v", fake.AllCalls())
	}
	th, err := p.DescribeThing(ctx, "gg-1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(th.Principals, []string{res.CertificateID}) || !slices.Equal(th.Policies, []string{provisioning.DefaultCorePolicy}) {
		t.Fatalf("thing = %+v, result %+v", th, res)
	}
	// The item re-run after a crash: same plan, nothing new.
	if _, err := svc.Provision(ctx, req); err != nil {
		t.Fatal(err)
	}
	if th2, _ := p.DescribeThing(ctx, "gg-1"); !slices.Equal(th2.Principals, th.Principals) || fake.Calls("CreateThing") != 1 {
		t.Fatalf("re-run: thing = %+v, calls %v", th2, fake.AllCalls())
	}

	// createDeviceAWSCertificate: AWS makes the key once, in Prepare.
	req = provisioning.Request{Template: "aws-cert", Parameters: map[string]string{"ThingName": "gg-2"}}
	planned, err = svc.Prepare(ctx, req)
	if err != nil || planned.PrivateKeyPem == "" {
		t.Fatalf("Prepare = %+v, %v", planned, err)
	}
	req.PlannedCertificate = planned
	res, err = svc.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if fake.Calls("CreateKeysAndCertificate") != 1 || res.PrivateKeyPem != planned.PrivateKeyPem {
		t.Fatalf("CreateKeysAndCertificate calls %d, result %+v", fake.Calls("CreateKeysAndCertificate"), res)
	}
	th, err = p.DescribeThing(ctx, "gg-2")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(th.Principals, []string{certIDOf(t, planned.CertificatePem)}) || !slices.Equal(th.Policies, []string{"extra-pol", provisioning.DefaultCorePolicy}) ||
		!slices.Equal(th.Groups, []string{"site-1"}) {
		t.Fatalf("thing = %+v", th)
	}
	// Another thing of that name is not taken over.
	other := provisioning.Request{Template: provisioning.DefaultCoreTemplate, Parameters: map[string]string{"ThingName": "gg-2"}}
	if _, err := svc.Provision(ctx, other); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("existing thing: err = %v, want Conflict", err)
	}
}
