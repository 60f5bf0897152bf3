package provisioning_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// TestRealParts provisions with the default templates through SQLite, the
// real certificate authority and the local provider, as `ggfleet serve` does.
func TestRealParts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := sqlstoretest.OpenIn(t, dir)
	key, err := ca.LoadOrCreateSecretsKey(filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	authority := ca.New(ca.Config{Store: db, SecretsKey: key})
	if _, _, err := authority.Init(ctx); err != nil {
		t.Fatal(err)
	}
	prov, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: filepath.Join(dir, "artifacts")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	svc := provisioning.New(provisioning.Config{Store: db, Provider: prov, Issuer: authority})
	if err := svc.SeedDefaults(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.SeedDefaults(ctx); err != nil {
		t.Fatalf("second SeedDefaults: %v", err)
	}

	for _, tc := range []struct{ template, thing, policy string }{
		{provisioning.DefaultCoreTemplate, "core-1", provisioning.DefaultCorePolicy},
		{provisioning.DefaultClientDeviceTemplate, "device-1", provisioning.DefaultClientDevicePolicy},
	} {
		t.Run(tc.template, func(t *testing.T) {
			req := provisioning.Request{Template: tc.template, Parameters: map[string]string{"ThingName": tc.thing},
				CDF: &provisioning.CDFParameters{CertInfo: &provisioning.CertInfo{Country: "US"}}}
			planned, err := svc.Prepare(ctx, req)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			req.PlannedCertificate = planned
			res, err := svc.Provision(ctx, req)
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			c, err := certs.ParseCertificate(res.CertificatePem)
			if err != nil || c.Subject.CommonName != tc.thing || certs.Algorithm(c.PublicKey) != certs.ECP256 {
				t.Fatalf("certificate = %v, %v", c.Subject, err)
			}
			th, err := prov.DescribeThing(ctx, tc.thing)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(th.Principals, []string{res.CertificateID}) || !slices.Equal(th.Policies, []string{tc.policy}) {
				t.Errorf("thing = %+v", th)
			}
			// A re-run with the same plan adopts the thing.
			if _, err := svc.Provision(ctx, req); err != nil {
				t.Fatalf("re-run: %v", err)
			}
			// Without the plan the thing is already provisioned.
			req.PlannedCertificate = nil
			if _, err := svc.Provision(ctx, req); !errkind.Is(err, errkind.Conflict) {
				t.Fatalf("fresh run on an existing thing: %v, want Conflict", err)
			}
		})
	}

	t.Run("missing policy leaves nothing behind", func(t *testing.T) {
		doc := `{"Parameters": {"ThingName": {"Type": "String"}, "CertificatePem": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
    "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "CertificatePem"}}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "no-such-policy"}}},
  "CDF": {"createDeviceCertificate": true}}`
		if _, err := svc.Put(ctx, "broken", []byte(doc)); err != nil {
			t.Fatal(err)
		}
		_, err := svc.Provision(ctx, provisioning.Request{Template: "broken", Parameters: map[string]string{"ThingName": "orphan"}})
		if !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("Provision = %v, want Invalid", err)
		}
		if _, err := prov.DescribeThing(ctx, "orphan"); !errkind.Is(err, errkind.NotFound) {
			t.Fatalf("thing left behind: %v", err)
		}
	})
}
