package provisioning

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// FuzzInterpreter feeds arbitrary template documents and parameter values
// through Put, Prepare and Provision: nothing may panic, and a failure must
// leave no thing behind.
func FuzzInterpreter(f *testing.F) {
	seed, err := os.ReadFile("testdata/seed-template.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, "core-1")
	f.Add(DefaultTemplates()[DefaultCoreTemplate], "dev")
	f.Add([]byte(thingWithCert("", `, "attachAdditionalPolicies": [{"name": "p", "document": {"Statement": []}}]`)), "x")
	f.Add([]byte(`{"Parameters": {"ThingName": {"Type": "String"}, "L": {"Type": "CommaDelimitedList", "Default": "a,b"}},
 "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Sub": ["${ThingName}-${x}", {"x": {"Fn::Select": [{"Ref": "ThingName"}, {"Ref": "L"}]}}]},
 "ThingGroups": {"Fn::Split": [",", {"Fn::Join": [",", {"Ref": "L"}]}]}}}}}`), "1")
	f.Add([]byte(`{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "t"}}, "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateSigningRequest": {"Ref": "CertificateSigningRequest"}}}}}`), "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
	f.Add([]byte(`{"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Sub": "${!x}${AWS::Region}"}}}}}`), "")
	f.Add([]byte(`null`), "")
	f.Add([]byte(`{"Resources": []}`), "")

	ctx := context.Background()
	iss := newFakeIssuer(f)
	f.Fuzz(func(t *testing.T, doc []byte, param string) {
		if err := Validate(doc); err != nil {
			if !errkind.Is(err, errkind.Invalid) {
				t.Fatalf("Validate error is not Invalid: %v", err)
			}
			return
		}
		e := &testEnv{prov: newFakeProvider(), iss: iss, store: newMemStore()}
		e.svc = New(Config{Store: e.store, Provider: e.prov, Issuer: e.iss})
		e.policy(t, "CDFGreengrass2CorePolicy", "myTokenExchangeRoleAliasPolicy", "p")
		if _, err := e.svc.Put(ctx, "fuzz", doc); err != nil {
			t.Fatalf("Put of a valid document: %v", err)
		}
		params := map[string]string{}
		for _, name := range []string{"ThingName", "L", "Serial", "CertificatePem", "CaCertificatePem", "CSR"} {
			params[name] = param
		}
		if param == "" {
			params = map[string]string{"ThingName": "fuzz-thing"}
		}
		req := Request{Template: "fuzz", Parameters: params, CDF: &CDFParameters{Csr: param, CertificatePem: param}}
		if strings.Contains(param, "Csr") {
			req.CDF.Csr = ""
		}
		if _, err := e.svc.Prepare(ctx, req); err != nil && errkind.Message(err) == "" && !strings.Contains(err.Error(), "issue") {
			t.Logf("Prepare: %v", err)
		}
		thingsBefore, _, _ := e.prov.counts()
		if _, err := e.svc.Provision(ctx, req); err != nil {
			if things, _, _ := e.prov.counts(); things != thingsBefore {
				t.Fatalf("failed provisioning (%v) left a thing behind", err)
			}
		}
	})
}
