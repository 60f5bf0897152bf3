package e2e

import (
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/certs"
)

// caView is a certificate authority as the API shows it.
type caView struct {
	CAID           string `json:"caId"`
	Default        bool   `json:"default"`
	CertificatePem string `json:"certificatePem"`
}

// TestAWSBrokerRegistersItsCAs: in aws mode the broker registers its
// default CA with AWS IoT at start and a CA generated through POST
// /certificateAuthorities at once, so cores whose certificates either CA
// signs (createDeviceCertificate) provision — the fake, like AWS, refuses
// a certificate whose CA is not registered and ACTIVE.
func TestAWSBrokerRegistersItsCAs(t *testing.T) {
	b, fake := startAWSBroker(t)

	var list struct {
		CAs []caView `json:"certificateAuthorities"`
	}
	b.must(200, "GET", "/certificateAuthorities", nil).JSON(t, &list)
	if len(list.CAs) != 1 || !list.CAs[0].Default {
		t.Fatalf("certificate authorities = %+v, want the default one", list.CAs)
	}
	def := list.CAs[0]
	if st, ok := fake.CAStatus(def.CertificatePem); !ok || st != "ACTIVE" {
		t.Fatalf("default CA %s in AWS IoT: status %q, registered %v; log:\n%s", def.CAID, st, ok, b.log())
	}

	var second caView
	b.must(201, "POST", "/certificateAuthorities", map[string]any{"commonName": "e2e second CA"}).JSON(t, &second)
	if st, ok := fake.CAStatus(second.CertificatePem); !ok || st != "ACTIVE" {
		t.Fatalf("generated CA %s in AWS IoT: status %q, registered %v", second.CAID, st, ok)
	}

	const byDefault, bySecond = "ca-core-1", "ca-core-2"
	c2 := core(bySecond)
	c2["cdfProvisioningParameters"] = map[string]any{"caId": second.CAID}
	id := b.createCores(core(byDefault), c2)
	task := b.waitTask("/coreTasks/"+id, 3*time.Minute)
	if task["taskStatus"] != "Success" {
		t.Fatalf("core task = %v; log:\n%s", task, b.log())
	}
	for name, ca := range map[string]caView{byDefault: def, bySecond: second} {
		leaf, err := certs.ParseCertificate(b.certsZip(name)["certs/cert.pem"])
		if err != nil {
			t.Fatalf("%s certs.zip: %v", name, err)
		}
		issuer, err := certs.ParseCertificate(ca.CertificatePem)
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.CheckSignatureFrom(issuer); err != nil {
			t.Fatalf("%s: certificate not signed by CA %s: %v", name, ca.CAID, err)
		}
		th, ok := fake.Thing(name)
		if !ok || len(th.Principals) != 1 {
			t.Fatalf("%s in AWS IoT = %+v (exists %v), want one certificate attached", name, th, ok)
		}
	}
}
