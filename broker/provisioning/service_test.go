package provisioning

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// testEnv is a Service over fakes.
type testEnv struct {
	svc   *Service
	prov  *fakeProvider
	iss   *fakeIssuer
	store *memStore
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{prov: newFakeProvider(), iss: newFakeIssuer(t), store: newMemStore()}
	e.svc = New(Config{Store: e.store, Provider: e.prov, Issuer: e.iss, Region: "eu-west-1"})
	return e
}

func (e *testEnv) put(t *testing.T, name, doc string) {
	t.Helper()
	if _, err := e.svc.Put(context.Background(), name, []byte(doc)); err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
}

func (e *testEnv) policy(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := e.prov.PutPolicy(context.Background(), n, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
			t.Fatal(err)
		}
	}
}

func readSeed(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/seed-template.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// thingWithCert is a template with a broker-made certificate, plus extras.
func thingWithCert(extraResources, cdf string) string {
	return `{
  "Parameters": {"ThingName": {"Type": "String"}, "CertificatePem": {"Type": "String"}, "CaCertificatePem": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "CertificatePem"}, "CACertificatePem": {"Ref": "CaCertificatePem"}, "Status": "ACTIVE"}}` + extraResources + `
  },
  "CDF": {"createDeviceCertificate": true` + cdf + `}
}`
}

func TestProvision(t *testing.T) {
	otherKey, _ := certs.GenerateKey("")
	csrPEM, _ := certs.NewCSR(otherKey, "someone-else")

	tests := []struct {
		name     string
		template string
		setup    func(t *testing.T, e *testEnv, req *Request)
		req      Request
		wantKind errkind.Kind // errkind.Other with wantErr "" means success
		wantErr  string
		check    func(t *testing.T, e *testEnv, res Result)
	}{
		{
			name:     "seed template",
			template: readSeed(t),
			setup: func(t *testing.T, e *testEnv, req *Request) {
				e.policy(t, "CDFGreengrass2CorePolicy", "myTokenExchangeRoleAliasPolicy")
				req.CDF.CaID = e.iss.id
			},
			req: Request{Parameters: map[string]string{"ThingName": "core-1"},
				CDF: &CDFParameters{CertInfo: &CertInfo{Country: "US", Organization: "Acme", EmailAddress: "ops@example.com", DaysExpiry: 30}}},
			check: func(t *testing.T, e *testEnv, res Result) {
				c := mustCert(t, res.CertificatePem)
				if c.Subject.CommonName != "core-1" || !slices.Equal(c.Subject.Country, []string{"US"}) || !slices.Equal(c.Subject.Organization, []string{"Acme"}) {
					t.Errorf("subject = %v", c.Subject)
				}
				if certs.ID(c) != res.CertificateID {
					t.Errorf("CertificateID = %s, want the PEM's id", res.CertificateID)
				}
				key, err := certs.ParseKey(res.PrivateKeyPem)
				if err != nil {
					t.Fatalf("private key: %v", err)
				}
				if certs.Algorithm(key.Public()) != certs.ECP256 {
					t.Errorf("key algorithm = %s, want EC-P256", certs.Algorithm(key.Public()))
				}
				if res.CaCertificatePem != e.iss.certPEM {
					t.Error("CaCertificatePem is not the issuing CA")
				}
				th, err := e.prov.DescribeThing(context.Background(), "core-1")
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(th.Principals, []string{res.CertificateID}) {
					t.Errorf("principals = %v", th.Principals)
				}
				want := []string{"CDFGreengrass2CorePolicy", "myTokenExchangeRoleAliasPolicy"}
				if !slices.Equal(th.Policies, want) || !slices.Equal(res.Policies, want) {
					t.Errorf("policies = %v / %v, want %v", th.Policies, res.Policies, want)
				}
				if reg, _ := e.prov.DescribeCertificate(context.Background(), res.CertificateID); reg.CAID != e.iss.id || reg.Status != "ACTIVE" {
					t.Errorf("registered certificate = %+v", reg)
				}
			},
		},
		{
			name: "Ref Join Sub Split Select and defaults",
			template: `{
  "Parameters": {
    "ThingName": {"Type": "String"},
    "Site": {"Type": "String", "Default": "lab"},
    "Serial": {"Type": "Number"},
    "Groups": {"Type": "CommaDelimitedList", "Default": "g1, g2"},
    "Tags": {"Type": "List<String>", "Default": ["a", "b"]}
  },
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {
      "ThingName": {"Fn::Join": ["-", [{"Ref": "ThingName"}, {"Ref": "Site"}]]},
      "ThingTypeName": "sensor",
      "AttributePayload": {
        "site": {"Ref": "Site"},
        "serial": {"Ref": "Serial"},
        "where": {"Fn::Sub": "${ThingName}@${AWS::Region}/${AWS::AccountId}"},
        "twoArg": {"Fn::Sub": ["${a}-${!literal}", {"a": {"Ref": "Serial"}}]},
        "picked": {"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]},
        "tags": {"Fn::Join": ["+", {"Ref": "Tags"}]}
      },
      "ThingGroups": {"Ref": "Groups"}
    }}
  }
}`,
			req: Request{Parameters: map[string]string{"ThingName": "dev", "Serial": "42"}},
			check: func(t *testing.T, e *testEnv, res Result) {
				if res.ThingName != "dev-lab" || res.CertificateID != "" {
					t.Fatalf("result = %+v", res)
				}
				th, err := e.prov.DescribeThing(context.Background(), "dev-lab")
				if err != nil {
					t.Fatal(err)
				}
				want := map[string]string{"site": "lab", "serial": "42", "where": "dev@eu-west-1/000000000000",
					"twoArg": "42-${literal}", "picked": "y", "tags": "a+b"}
				for k, v := range want {
					if th.Attributes[k] != v {
						t.Errorf("attribute %s = %q, want %q", k, th.Attributes[k], v)
					}
				}
				if th.ThingType != "sensor" || !slices.Equal(th.Groups, []string{"g1", "g2"}) {
					t.Errorf("type %q groups %v", th.ThingType, th.Groups)
				}
			},
		},
		{
			name: "missing parameter",
			template: `{"Parameters": {"ThingName": {"Type": "String"}, "Serial": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"serial": {"Ref": "Serial"}}}}}}`,
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			wantKind: errkind.Invalid,
			wantErr:  `parameter "Serial" is referenced`,
		},
		{
			name: "number parameter that is not a number",
			template: `{"Parameters": {"ThingName": {"Type": "String"}, "Serial": {"Type": "Number"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"serial": {"Ref": "Serial"}}}}}}`,
			req:      Request{Parameters: map[string]string{"ThingName": "dev", "Serial": "many"}},
			wantKind: errkind.Invalid,
			wantErr:  `must be a number`,
		},
		{
			name:     "invalid thing name",
			template: `{"Parameters": {"ThingName": {"Type": "String"}}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}}}`,
			req:      Request{Parameters: map[string]string{"ThingName": "bad:name"}},
			wantKind: errkind.Invalid,
			wantErr:  `thing name "bad:name" is not valid`,
		},
		{
			name:     "policy by name missing leaves nothing behind",
			template: thingWithCert(`, "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "nope"}}`, ""),
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			wantKind: errkind.Invalid,
			wantErr:  `policy "nope"`,
		},
		{
			name:     "additional policy missing",
			template: thingWithCert("", `, "attachAdditionalPolicies": [{"name": "absent"}]`),
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			wantKind: errkind.Invalid,
			wantErr:  `policy "absent"`,
		},
		{
			name: "CSR signed with CN forced to the thing name",
			template: `{"Parameters": {"ThingName": {"Type": "String"}, "CSR": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateSigningRequest": {"Ref": "CSR"}, "Status": "ACTIVE"}},
    "pol": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": {"Version": "2012-10-17", "Statement": []}}}}}`,
			req: Request{Parameters: map[string]string{"ThingName": "dev", "CSR": csrPEM}},
			check: func(t *testing.T, e *testEnv, res Result) {
				c := mustCert(t, res.CertificatePem)
				if c.Subject.CommonName != "dev" {
					t.Errorf("CN = %q, want dev", c.Subject.CommonName)
				}
				if !otherKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
					t.Error("certificate is not for the CSR's key")
				}
				if res.PrivateKeyPem != "" {
					t.Error("a private key was returned for a CSR")
				}
				if !slices.Equal(res.Policies, []string{"dev_pol"}) {
					t.Errorf("policies = %v, want the generated dev_pol", res.Policies)
				}
			},
		},
		{
			name: "PEM with CA",
			template: `{"Parameters": {"ThingName": {"Type": "String"}, "Pem": {"Type": "String"}, "Ca": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "Pem"}, "CACertificatePem": {"Ref": "Ca"}, "Status": "INACTIVE"}}}}`,
			setup: func(t *testing.T, e *testEnv, req *Request) {
				pem, ca := issueFor(t, e, "dev")
				req.Parameters["Pem"], req.Parameters["Ca"] = pem, ca
			},
			req: Request{Parameters: map[string]string{"ThingName": "dev"}},
			check: func(t *testing.T, e *testEnv, res Result) {
				reg, err := e.prov.DescribeCertificate(context.Background(), res.CertificateID)
				if err != nil || reg.CAID != e.iss.id || reg.Status != "INACTIVE" {
					t.Errorf("registered = %+v, %v", reg, err)
				}
			},
		},
		{
			name: "PEM signed by another CA than CACertificatePem",
			template: `{"Parameters": {"ThingName": {"Type": "String"}, "Pem": {"Type": "String"}, "Ca": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "Pem"}, "CACertificatePem": {"Ref": "Ca"}}}}}`,
			setup: func(t *testing.T, e *testEnv, req *Request) {
				pem, _ := issueFor(t, e, "dev")
				req.Parameters["Pem"], req.Parameters["Ca"] = pem, newFakeIssuer(t).certPEM
			},
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			wantKind: errkind.Invalid,
			wantErr:  "was not issued by",
		},
		{
			name: "registerDeviceCertificateWithoutCA",
			template: `{"Parameters": {"ThingName": {"Type": "String"}, "CertificateId": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"arn": {"Ref": "CertificateArn"}}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}}}},
  "CDF": {"registerDeviceCertificateWithoutCA": true}}`,
			setup: func(t *testing.T, e *testEnv, req *Request) {
				pem, _ := issueFor(t, e, "dev")
				req.CDF.CertificatePem = pem
			},
			req: Request{Parameters: map[string]string{"ThingName": "dev"}, CDF: &CDFParameters{CertificateStatus: "INACTIVE"}},
			check: func(t *testing.T, e *testEnv, res Result) {
				reg, err := e.prov.DescribeCertificate(context.Background(), res.CertificateID)
				if err != nil || reg.CAID != "" || reg.Status != "INACTIVE" {
					t.Errorf("registered = %+v, %v", reg, err)
				}
				th, _ := e.prov.DescribeThing(context.Background(), "dev")
				if th.Attributes["arn"] != "arn:aws:iot:eu-west-1:000000000000:cert/"+res.CertificateID {
					t.Errorf("CertificateArn = %q", th.Attributes["arn"])
				}
				if !slices.Equal(th.Principals, []string{res.CertificateID}) || res.CertificatePem == "" {
					t.Errorf("principals = %v", th.Principals)
				}
			},
		},
		{
			name:     "registerDeviceCertificateWithoutCA without a PEM",
			template: `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "dev"}}}, "CDF": {"registerDeviceCertificateWithoutCA": true}}`,
			wantKind: errkind.Invalid,
			wantErr:  "needs cdfProvisioningParameters.certificatePem",
		},
		{
			name: "attachAdditionalPolicies with and without document",
			template: thingWithCert("", `, "attachAdditionalPolicies": [
      {"name": "made", "document": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}},
      {"name": "asString", "document": "{\"Version\":\"2012-10-17\",\"Statement\":[]}"},
      {"name": "existing"}]`),
			setup: func(t *testing.T, e *testEnv, req *Request) { e.policy(t, "existing") },
			req:   Request{Parameters: map[string]string{"ThingName": "dev"}},
			check: func(t *testing.T, e *testEnv, res Result) {
				if want := []string{"asString", "existing", "made"}; !slices.Equal(res.Policies, want) {
					t.Errorf("policies = %v, want %v", res.Policies, want)
				}
				p, err := e.prov.GetPolicy(context.Background(), "made")
				if err != nil || !strings.Contains(p.Document, "iot:Connect") {
					t.Errorf("policy made = %+v, %v", p, err)
				}
			},
		},
		{
			name:     "RSA via keyAlgorithm",
			template: thingWithCert("", ""),
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}, CDF: &CDFParameters{CertInfo: &CertInfo{KeyAlgorithm: certs.RSA2048}}},
			check: func(t *testing.T, e *testEnv, res Result) {
				if _, ok := mustCert(t, res.CertificatePem).PublicKey.(*rsa.PublicKey); !ok {
					t.Error("certificate key is not RSA")
				}
			},
		},
		{
			name:     "RSA as the CA's default",
			template: thingWithCert("", ""),
			setup:    func(t *testing.T, e *testEnv, req *Request) { e.iss.defaultAlg = certs.RSA2048 },
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			check: func(t *testing.T, e *testEnv, res Result) {
				if _, ok := mustCert(t, res.CertificatePem).PublicKey.(*rsa.PublicKey); !ok {
					t.Error("certificate key is not RSA")
				}
			},
		},
		{
			name:     "unsupported keyAlgorithm",
			template: thingWithCert("", ""),
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}, CDF: &CDFParameters{CertInfo: &CertInfo{KeyAlgorithm: "DSA"}}},
			wantKind: errkind.Invalid,
			wantErr:  "keyAlgorithm",
		},
		{
			name:     "unknown CA",
			template: thingWithCert("", ""),
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}, CDF: &CDFParameters{CaID: "feedface"}},
			wantKind: errkind.Invalid,
			wantErr:  "caId",
		},
		{
			name:     "existing thing is a conflict",
			template: thingWithCert("", ""),
			setup: func(t *testing.T, e *testEnv, req *Request) {
				if err := e.prov.CreateThing(context.Background(), "dev", "", nil); err != nil {
					t.Fatal(err)
				}
			},
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			wantKind: errkind.Conflict,
			wantErr:  "already provisioned",
		},
		{
			name:     "provider failure undoes everything",
			template: thingWithCert("", `, "attachAdditionalPolicies": [{"name": "made", "document": {"Statement": []}}]`),
			setup:    func(t *testing.T, e *testEnv, req *Request) { e.prov.failAttachPolicy = true },
			req:      Request{Parameters: map[string]string{"ThingName": "dev"}},
			wantKind: errkind.Unavailable,
			wantErr:  "injected failure",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			ctx := context.Background()
			e.put(t, "tmpl", tt.template)
			req := tt.req
			req.Template = "tmpl"
			if req.CDF == nil {
				req.CDF = &CDFParameters{}
			}
			if req.Parameters == nil {
				req.Parameters = map[string]string{}
			}
			if tt.setup != nil {
				tt.setup(t, e, &req)
			}
			_, _, policiesBefore := e.prov.counts()
			thingsBefore, certsBefore, _ := e.prov.counts()
			res, err := e.svc.Provision(ctx, req)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errkind.KindOf(err) != tt.wantKind {
					t.Fatalf("Provision error = %v (kind %v), want kind %v containing %q", err, errkind.KindOf(err), tt.wantKind, tt.wantErr)
				}
				things, certificates, policies := e.prov.counts()
				if things != thingsBefore || certificates != certsBefore || policies != policiesBefore {
					t.Errorf("left behind: things %d→%d, certificates %d→%d, policies %d→%d",
						thingsBefore, things, certsBefore, certificates, policiesBefore, policies)
				}
				return
			}
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			if tt.check != nil {
				tt.check(t, e, res)
			}
		})
	}
}

func TestUnknownTemplate(t *testing.T) {
	e := newTestEnv(t)
	_, err := e.svc.Provision(context.Background(), Request{Template: "nope", Parameters: map[string]string{"ThingName": "x"}})
	if !errkind.Is(err, errkind.Invalid) || errkind.Message(err) != "BadRequestError: INVALID_PROVISIONING_TEMPLATE: nope" {
		t.Fatalf("err = %v", err)
	}
	if _, err := e.svc.Prepare(context.Background(), Request{Template: "nope"}); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("Prepare err = %v", err)
	}
}

func TestDefaultTemplates(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	if err := e.svc.SeedDefaults(ctx); err != nil {
		t.Fatal(err)
	}
	// Seeding again keeps an operator's changes.
	changed := thingWithCert("", "")
	e.put(t, DefaultClientDeviceTemplate, changed)
	if err := e.svc.SeedDefaults(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Get(ctx, DefaultClientDeviceTemplate); string(got) != changed {
		t.Error("SeedDefaults replaced an existing template")
	}
	for name, policy := range map[string]string{DefaultCoreTemplate: DefaultCorePolicy} {
		res, err := e.svc.Provision(ctx, Request{Template: name, Parameters: map[string]string{"ThingName": "core-" + name}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(res.Policies, []string{policy}) || res.PrivateKeyPem == "" || res.CertificateID == "" {
			t.Errorf("%s: result %+v", name, res)
		}
	}
	for name, doc := range DefaultPolicies() {
		if p, err := e.prov.GetPolicy(ctx, name); err != nil || p.Document != doc {
			t.Errorf("policy %s not seeded: %v", name, err)
		}
	}
}

func TestPrepareAndResume(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	e.put(t, "tmpl", thingWithCert(`, "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol"}}`, ""))
	e.policy(t, "pol")
	req := Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "dev"}}
	planned, err := e.svc.Prepare(ctx, req)
	if err != nil || planned == nil || planned.PrivateKeyPem == "" || planned.CaCertificatePem == "" {
		t.Fatalf("Prepare = %+v, %v", planned, err)
	}
	if things, certificates, _ := e.prov.counts(); things != 0 || certificates != 0 {
		t.Fatal("Prepare had side effects")
	}
	// A crash after the thing was made and the certificate attached, before
	// the policies: the re-run adopts the thing and finishes.
	c := mustCert(t, planned.CertificatePem)
	if err := e.prov.CreateThing(ctx, "dev", "", nil); err != nil {
		t.Fatal(err)
	}
	id, err := e.prov.RegisterCertificate(ctx, planned.CertificatePem, planned.CaCertificatePem, "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.prov.AttachThingPrincipal(ctx, "dev", id); err != nil {
		t.Fatal(err)
	}
	issued := e.iss.issued
	req.PlannedCertificate = planned
	for range 2 {
		res, err := e.svc.Provision(ctx, req)
		if err != nil {
			t.Fatalf("resume: %v", err)
		}
		if res.CertificateID != certs.ID(c) || res.PrivateKeyPem != planned.PrivateKeyPem || !slices.Equal(res.Policies, []string{"pol"}) {
			t.Fatalf("resume result = %+v", res)
		}
	}
	if e.iss.issued != issued {
		t.Error("resume issued another certificate")
	}
	th, _ := e.prov.DescribeThing(ctx, "dev")
	if !slices.Equal(th.Policies, []string{"pol"}) || len(th.Principals) != 1 {
		t.Errorf("thing after resume = %+v", th)
	}
	// A different planned certificate does not adopt the thing.
	other, err := e.svc.Prepare(ctx, Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "dev"}})
	if err != nil {
		t.Fatal(err)
	}
	req.PlannedCertificate = other
	if _, err := e.svc.Provision(ctx, req); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("other plan: err = %v, want Conflict", err)
	}
	// A plan for another thing is refused.
	req.Parameters = map[string]string{"ThingName": "dev2"}
	if _, err := e.svc.Provision(ctx, req); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("plan for another thing: err = %v, want Invalid", err)
	}
}

func TestWithBatchReads(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	e.put(t, "tmpl", thingWithCert("", ""))
	prepare := func(ctx context.Context, n int) int {
		t.Helper()
		e.store.mu.Lock()
		e.store.reads = 0
		e.store.mu.Unlock()
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.svc.Prepare(ctx, Request{Template: "tmpl", Parameters: map[string]string{"ThingName": fmt.Sprintf("dev%d", i)}}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		e.store.mu.Lock()
		defer e.store.mu.Unlock()
		return e.store.reads
	}
	if got := prepare(ctx, 4); got != 4 {
		t.Errorf("plain context: %d template reads for 4 things, want 4", got)
	}
	batch := WithBatchReads(ctx)
	if got := prepare(batch, 4); got < 1 || got > 4 {
		t.Errorf("batch context: %d template reads for 4 things", got)
	}
	if got := prepare(batch, 4); got != 0 {
		t.Errorf("batch context, second round: %d template reads, want 0", got)
	}
	// A template changed after the batch is read by the next one.
	e.put(t, "tmpl", `{"Parameters": {"ThingName": {"Type": "String"}}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}}}`)
	planned, err := e.svc.Prepare(WithBatchReads(ctx), Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "later"}})
	if err != nil || planned != nil {
		t.Errorf("Prepare with the changed template (no certificate) = %+v, %v; want no plan", planned, err)
	}
	// A missing template is not remembered.
	if _, err := e.svc.Prepare(batch, Request{Template: "nope", Parameters: map[string]string{"ThingName": "x"}}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("missing template: err = %v, want Invalid", err)
	}
	e.put(t, "nope", thingWithCert("", ""))
	if _, err := e.svc.Prepare(batch, Request{Template: "nope", Parameters: map[string]string{"ThingName": "x"}}); err != nil {
		t.Errorf("template created within the batch: %v", err)
	}
}

func TestPrepareWithoutCertificate(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, "tmpl", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "fixed"}}}}`)
	p, err := e.svc.Prepare(context.Background(), Request{Template: "tmpl"})
	if err != nil || p != nil {
		t.Fatalf("Prepare = %v, %v; want nil, nil", p, err)
	}
}

func TestValidate(t *testing.T) {
	thing := `"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}`
	params := `"Parameters": {"ThingName": {"Type": "String"}}`
	tests := []struct {
		name, doc, wantErr string
	}{
		{"seed", readSeed(t), ""},
		{"default core", string(DefaultTemplates()[DefaultCoreTemplate]), ""},
		{"not an object", `[1]`, "must be a JSON object"},
		{"not JSON", `{`, "not valid JSON"},
		{"trailing data", `{"Resources": {}} x`, "data after"},
		{"no resources", `{` + params + `}`, "Resources must be"},
		{"unknown section", `{"Outputs": {}, "Resources": {` + thing + `}}`, `top-level section "Outputs"`},
		{"conditions not an object", `{` + params + `, "Conditions": [], "Resources": {` + thing + `}}`, "Conditions must be an object"},
		{"condition function", `{` + params + `, "Conditions": {"c": {"Fn::Contains": ["a", "b"]}}, "Resources": {` + thing + `}}`, `condition "c" uses Fn::Contains`},
		{"condition loop", `{` + params + `, "Conditions": {"a": {"Condition": "b"}, "b": {"Condition": "a"}}, "Resources": {` + thing + `}}`, "a loop"},
		{"undeclared condition", `{` + params + `, "Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::If": ["nope", "a", "b"]}}}}}`, `condition "nope" is not declared`},
		{"unknown resource type", `{` + params + `, "Resources": {` + thing + `, "x": {"Type": "AWS::S3::Bucket"}}}`, `resource "x" has Type "AWS::S3::Bucket"`},
		{"no thing", `{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "p"}}}}`, "exactly one AWS::IoT::Thing"},
		{"bad parameter type", `{"Parameters": {"ThingName": {"Type": "Integer"}}, "Resources": {` + thing + `}}`, `parameter "ThingName" has Type "Integer"`},
		{"bad default", `{"Parameters": {"ThingName": {"Type": "Number", "Default": "x"}}, "Resources": {` + thing + `}}`, "does not fit Type Number"},
		{"undeclared ref", `{"Resources": {` + thing + `}}`, `Ref "ThingName" names no parameter`},
		{"unknown function", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::GetAtt": ["a", "b"]}}}}}`, `unsupported intrinsic function "Fn::GetAtt"`},
		{"unclosed sub", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Sub": "x-${y"}}}}}`, "not closed"},
		{"bad join", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Join": "-"}}}}}`, "Fn::Join takes"},
		{"CDF flag not bool", `{` + params + `, "Resources": {` + thing + `}, "CDF": {"createDeviceCertificate": "yes"}}`, "CDF.createDeviceCertificate must be true or false"},
		{"CDF unknown option", `{` + params + `, "Resources": {` + thing + `}, "CDF": {"makeItSo": true}}`, `unknown option "makeItSo"`},
		{"CDF acmpca", `{` + params + `, "Resources": {` + thing + `}, "CDF": {"acmpca": {}}}`, "not supported"},
		{"CDF policies not array", `{` + params + `, "Resources": {` + thing + `}, "CDF": {"attachAdditionalPolicies": {"policies": []}}}`, "must be an array"},
		{"CDF policy without name", `{` + params + `, "Resources": {` + thing + `}, "CDF": {"attachAdditionalPolicies": [{}]}}`, "name must be"},
		{"policy without certificate", `{` + params + `, "Resources": {` + thing + `, "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "p"}}}}`, "needs an AWS::IoT::Certificate"},
		{"unknown property", `{` + params + `, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x", "Colour": "red"}}}}`, `unsupported property "Colour"`},
		{"two certificate sources", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}, "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": "a", "CertificatePem": "b"}}}}`, "exactly one of"},
		{"bad status", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}, "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": "a", "Status": "ON"}}}}`, "Status must be"},
		{"injected ref without its option", `{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}, "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "CertificatePem"}}}}}`, `Ref "CertificatePem" names no parameter`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate([]byte(tt.doc))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), tt.wantErr) {
				t.Fatalf("Validate error = %v, want Invalid containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTemplateCRUD(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	doc := readSeed(t)
	if _, err := e.svc.Put(ctx, "bad name", []byte(doc)); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := e.svc.Put(ctx, "t1", []byte(`{}`)); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("bad doc: %v", err)
	}
	if created, err := e.svc.Put(ctx, "t1", []byte(doc)); err != nil || !created {
		t.Fatalf("first Put = %v, %v", created, err)
	}
	if created, err := e.svc.Put(ctx, "t1", []byte(doc)); err != nil || created {
		t.Fatalf("second Put = %v, %v", created, err)
	}
	got, err := e.svc.Get(ctx, "t1")
	if err != nil || string(got) != doc {
		t.Fatalf("Get = %q, %v", got, err)
	}
	list, err := e.svc.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "t1" || list[0].CreatedAt.IsZero() || list[0].UpdatedAt.IsZero() {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := e.svc.Delete(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, "t1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if err := e.svc.Delete(ctx, "t1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("Delete again: %v", err)
	}
}

func mustCert(t *testing.T, pem string) *x509.Certificate {
	t.Helper()
	c, err := certs.ParseCertificate(pem)
	if err != nil {
		t.Fatalf("certificate: %v", err)
	}
	return c
}

// issueFor makes a certificate for thing with the test CA, outside provisioning.
func issueFor(t *testing.T, e *testEnv, thing string) (certPEM, caPEM string) {
	t.Helper()
	key, _ := certs.GenerateKey("")
	r := &run{thing: thingSpec{Name: thing}}
	certPEM, caPEM, err := e.iss.Issue(context.Background(), "", key.Public(), r.subject(), 10)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, caPEM
}

// A crash between creating the thing and attaching its certificate leaves a
// thing with no principal: the re-run with the plan adopts and finishes it.
func TestResumeAdoptsThingWithoutPrincipal(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	e.put(t, "tmpl", thingWithCert(`, "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol"}}`, ""))
	e.policy(t, "pol")
	req := Request{Template: "tmpl", Parameters: map[string]string{"ThingName": "dev"}}
	planned, err := e.svc.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.prov.CreateThing(ctx, "dev", "", nil); err != nil {
		t.Fatal(err)
	}
	// Without the plan the same thing is somebody else's.
	if _, err := e.svc.Provision(ctx, req); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("no plan: err = %v, want Conflict", err)
	}
	req.PlannedCertificate = planned
	res, err := e.svc.Provision(ctx, req)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	th, _ := e.prov.DescribeThing(ctx, "dev")
	if len(th.Principals) != 1 || th.Principals[0] != res.CertificateID || !slices.Equal(th.Policies, []string{"pol"}) {
		t.Fatalf("thing after resume = %+v", th)
	}
}

// TestProvisionThingAbsent checks Request.ThingAbsent: the thing the caller
// found missing is created without a lookup, and one made meanwhile after
// all is refused with Conflict and left as it was.
func TestProvisionThingAbsent(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t)
	e.put(t, "T", thingWithCert("", ""))

	res, err := e.svc.Provision(ctx, Request{Template: "T", Parameters: map[string]string{"ThingName": "fresh"}, ThingAbsent: true})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if e.prov.describes != 0 {
		t.Errorf("Provision looked the thing up %d times despite ThingAbsent", e.prov.describes)
	}
	th, err := e.prov.DescribeThing(ctx, "fresh")
	if err != nil || !slices.Equal(th.Principals, []string{res.CertificateID}) {
		t.Fatalf("thing fresh = %+v, %v; want it holding %s", th, err, res.CertificateID)
	}

	if err := e.prov.CreateThing(ctx, "raced", "", nil); err != nil {
		t.Fatal(err)
	}
	certsBefore := len(e.prov.certs)
	_, err = e.svc.Provision(ctx, Request{Template: "T", Parameters: map[string]string{"ThingName": "raced"}, ThingAbsent: true})
	if !errkind.Is(err, errkind.Conflict) || !strings.Contains(err.Error(), "already provisioned") {
		t.Fatalf("Provision of a thing made meanwhile = %v, want Conflict (already provisioned)", err)
	}
	if th, _ := e.prov.DescribeThing(ctx, "raced"); len(th.Principals) != 0 || len(e.prov.certs) != certsBefore {
		t.Fatalf("the refused call changed things: principals %v, %d certificates (was %d)", th.Principals, len(e.prov.certs), certsBefore)
	}
}

// TestWithBatchReadsPolicies checks that a batch context looks up each
// policy a template names once for all its things, remembers only
// policies that exist, and that a plain context looks up every time.
func TestWithBatchReadsPolicies(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t)
	e.put(t, "tmpl", thingWithCert(`, "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "pol"}}`, ""))
	provision := func(ctx context.Context, thing string) error {
		t.Helper()
		_, err := e.svc.Provision(ctx, Request{Template: "tmpl", Parameters: map[string]string{"ThingName": thing}})
		return err
	}
	reads := func() int {
		e.prov.mu.Lock()
		defer e.prov.mu.Unlock()
		n := e.prov.policyReads
		e.prov.policyReads = 0
		return n
	}

	batch := WithBatchReads(ctx)
	if err := provision(batch, "early"); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("Provision naming a missing policy = %v, want Invalid", err)
	}
	e.policy(t, "pol")
	reads()
	for _, thing := range []string{"a", "b", "c"} {
		if err := provision(batch, thing); err != nil {
			t.Fatalf("Provision(%s): %v", thing, err)
		}
	}
	if n := reads(); n != 1 {
		t.Errorf("batch context: %d policy lookups for 3 things, want 1 (a missing policy is not remembered)", n)
	}
	for _, thing := range []string{"d", "e"} {
		if err := provision(ctx, thing); err != nil {
			t.Fatalf("Provision(%s): %v", thing, err)
		}
	}
	if n := reads(); n != 2 {
		t.Errorf("plain context: %d policy lookups for 2 things, want 2", n)
	}
}
