// Package providertest is the behaviour suite every provider.Provider
// implementation must pass, so the local provider and the aws provider (run
// against its HTTP fake) keep one contract: error kinds, idempotence,
// cascades and the artifact store.
package providertest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// Registrar is implemented by providers (or test wrappers around them) that
// can make a core registered, as enrollment or a first MQTT connection does
// for the local provider. The aws suite implements it through its fake.
// Without it, the subtests that need a registered core are skipped with a
// message saying so.
type Registrar interface {
	MarkCoreRegistered(ctx context.Context, name string) error
}

// CATruster is implemented by providers (or test wrappers around them) that
// must be given a CA before certificates it signs can be registered with it,
// as AWS IoT needs RegisterCACertificate. The suite passes every test CA it
// registers certificates with; the Issuer holds the key, so a provider can
// prove possession with Issuer.Sign.
type CATruster interface {
	TrustCA(ctx context.Context, is *Issuer) error
}

// issuerFor makes a test CA that p accepts as a certificate's CA.
func issuerFor(t *testing.T, p provider.Provider) *Issuer {
	t.Helper()
	is := NewIssuer(t)
	if c, ok := p.(CATruster); ok {
		must(t, "trust the test CA", c.TrustCA(context.Background(), is))
	}
	return is
}

// Run runs the suite. newProvider must return a fresh, empty provider for
// each call; it is called once per subtest.
func Run(t *testing.T, newProvider func(t *testing.T) provider.Provider) {
	t.Run("Mode", func(t *testing.T) {
		p := newProvider(t)
		if m := p.Mode(); m != "local" && m != "aws" {
			t.Fatalf("Mode() = %q, want local or aws", m)
		}
	})
	t.Run("Things", func(t *testing.T) { testThings(t, newProvider(t)) })
	t.Run("ThingNames", func(t *testing.T) { testThingNames(t, newProvider(t)) })
	t.Run("Certificates", func(t *testing.T) { testCertificates(t, newProvider(t)) })
	t.Run("Principals", func(t *testing.T) { testPrincipals(t, newProvider(t)) })
	t.Run("Policies", func(t *testing.T) { testPolicies(t, newProvider(t)) })
	t.Run("ThingGroups", func(t *testing.T) { testThingGroups(t, newProvider(t)) })
	t.Run("DeleteThingCascade", func(t *testing.T) { testDeleteThingCascade(t, newProvider(t)) })
	t.Run("CoreDevices", func(t *testing.T) { testCoreDevices(t, newProvider(t)) })
	t.Run("Associations", func(t *testing.T) { testAssociations(t, newProvider(t)) })
	t.Run("Artifacts", func(t *testing.T) { testArtifacts(t, newProvider(t)) })
	t.Run("ArtifactKeys", func(t *testing.T) { testArtifactKeys(t, newProvider(t)) })
}

// wantKind fails unless err has the given kind.
func wantKind(t *testing.T, what string, err error, kind errkind.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %s", what, kindName(kind))
	}
	if got := errkind.KindOf(err); got != kind {
		t.Fatalf("%s: error %q is %s, want %s", what, err, kindName(got), kindName(kind))
	}
}

// kindName names an error kind for failure messages.
func kindName(k errkind.Kind) string {
	switch k {
	case errkind.Invalid:
		return "errkind.Invalid"
	case errkind.NotFound:
		return "errkind.NotFound"
	case errkind.Conflict:
		return "errkind.Conflict"
	case errkind.Unauthorized:
		return "errkind.Unauthorized"
	case errkind.Forbidden:
		return "errkind.Forbidden"
	case errkind.Unavailable:
		return "errkind.Unavailable"
	}
	return "errkind.Other"
}

// must fails on a non-nil error.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// sameStrings compares string lists, treating nil and empty alike.
func sameStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

// Issuer makes test certificates: a CA and leaf certificates it signs.
type Issuer struct {
	CAPEM string
	ca    *x509.Certificate
	key   any
}

// NewIssuer makes a self-signed test CA.
func NewIssuer(t *testing.T) *Issuer {
	t.Helper()
	key, err := certs.GenerateKey("")
	must(t, "generate CA key", err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "providertest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, "create CA certificate", err)
	ca, err := x509.ParseCertificate(der)
	must(t, "parse CA certificate", err)
	return &Issuer{CAPEM: certs.EncodeCertificate(der), ca: ca, key: key}
}

// Issue returns the PEM of a new leaf certificate with CN = name.
func (is *Issuer) Issue(t *testing.T, name string) string {
	t.Helper()
	key, err := certs.GenerateKey("")
	must(t, "generate key", err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	must(t, "serial", err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.ca, key.Public(), is.key)
	must(t, "create certificate", err)
	return certs.EncodeCertificate(der)
}

// Sign signs pub for subject with the test CA (valid for days, client
// auth) and returns the certificate's PEM.
func (is *Issuer) Sign(pub crypto.PublicKey, subject pkix.Name, days int) (string, error) {
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.ca, pub, is.key)
	if err != nil {
		return "", err
	}
	return certs.EncodeCertificate(der), nil
}

// CAID is the id of the test CA.
func (is *Issuer) CAID() string { return certs.ID(is.ca) }

func certID(t *testing.T, pemText string) string {
	t.Helper()
	c, err := certs.ParseCertificate(pemText)
	must(t, "parse certificate", err)
	return certs.ID(c)
}

// registerCore makes core registered through the Registrar hook, or skips.
func registerCore(t *testing.T, p provider.Provider, core string) {
	t.Helper()
	r, ok := p.(Registrar)
	if !ok {
		t.Skipf("provider %T does not implement providertest.Registrar: wrap it so the suite can register core %q", p, core)
	}
	must(t, "register core", r.MarkCoreRegistered(context.Background(), core))
}

func testThings(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	_, err := p.DescribeThing(ctx, "missing")
	wantKind(t, "DescribeThing(missing)", err, errkind.NotFound)

	before := time.Now().Add(-time.Minute)
	must(t, "CreateThing", p.CreateThing(ctx, "thing-1", "", map[string]string{"color": "blue"}))
	wantKind(t, "CreateThing again", p.CreateThing(ctx, "thing-1", "", nil), errkind.Conflict)

	th, err := p.DescribeThing(ctx, "thing-1")
	must(t, "DescribeThing", err)
	if th.Name != "thing-1" {
		t.Errorf("Name = %q, want thing-1", th.Name)
	}
	if !reflect.DeepEqual(th.Attributes, map[string]string{"color": "blue"}) {
		t.Errorf("Attributes = %v, want color=blue", th.Attributes)
	}
	if th.CreatedAt.Before(before) {
		t.Errorf("CreatedAt = %v, want about now", th.CreatedAt)
	}
	sameStrings(t, "Groups", th.Groups, nil)
	sameStrings(t, "Principals", th.Principals, nil)
	sameStrings(t, "Policies", th.Policies, nil)

	must(t, "CreateThing without attributes", p.CreateThing(ctx, "thing-2", "", nil))
	th, err = p.DescribeThing(ctx, "thing-2")
	must(t, "DescribeThing thing-2", err)
	if len(th.Attributes) != 0 {
		t.Errorf("Attributes = %v, want none", th.Attributes)
	}

	must(t, "DeleteThing", p.DeleteThing(ctx, "thing-1"))
	_, err = p.DescribeThing(ctx, "thing-1")
	wantKind(t, "DescribeThing after delete", err, errkind.NotFound)
	must(t, "DeleteThing again (idempotent)", p.DeleteThing(ctx, "thing-1"))
	must(t, "DeleteThing never created", p.DeleteThing(ctx, "never-created"))
	must(t, "CreateThing after delete", p.CreateThing(ctx, "thing-1", "", nil))
}

func testThingNames(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	for _, name := range []string{"", "has:colon", "has space", "naïve", "a/b", strings.Repeat("a", 129)} {
		t.Run("", func(t *testing.T) {
			wantKind(t, "CreateThing("+name+")", p.CreateThing(ctx, name, "", nil), errkind.Invalid)
			wantKind(t, "CreateThingGroup("+name+")", p.CreateThingGroup(ctx, name, ""), errkind.Invalid)
		})
	}
	must(t, "CreateThing(128 chars)", p.CreateThing(ctx, strings.Repeat("a", 128), "", nil))
	must(t, "CreateThing(_-)", p.CreateThing(ctx, "A_b-9", "", nil))
}

func testCertificates(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	is := issuerFor(t, p)
	pemText := is.Issue(t, "thing-1")
	want := certID(t, pemText)

	_, err := p.DescribeCertificate(ctx, want)
	wantKind(t, "DescribeCertificate before register", err, errkind.NotFound)

	id, err := p.RegisterCertificate(ctx, pemText, is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate", err)
	if id != want {
		t.Fatalf("RegisterCertificate id = %s, want %s (hex SHA-256 of the DER)", id, want)
	}
	again, err := p.RegisterCertificate(ctx, pemText, is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate again", err)
	if again != id {
		t.Fatalf("RegisterCertificate again id = %s, want %s", again, id)
	}
	c, err := p.DescribeCertificate(ctx, id)
	must(t, "DescribeCertificate", err)
	if c.ID != id || c.Status != "ACTIVE" || c.CAID != is.CAID() || c.CreatedAt.IsZero() {
		t.Errorf("DescribeCertificate = {ID:%s Status:%s CAID:%s CreatedAt:%v}, want {%s ACTIVE %s non-zero}", c.ID, c.Status, c.CAID, c.CreatedAt, id, is.CAID())
	}
	if certID(t, c.PEM) != id {
		t.Errorf("DescribeCertificate PEM is not the registered certificate")
	}

	noCA := is.Issue(t, "thing-2")
	id2, err := p.RegisterCertificate(ctx, noCA, "", "INACTIVE")
	must(t, "RegisterCertificate without CA", err)
	c, err = p.DescribeCertificate(ctx, id2)
	must(t, "DescribeCertificate without CA", err)
	if c.CAID != "" || c.Status != "INACTIVE" {
		t.Errorf("DescribeCertificate = {CAID:%q Status:%s}, want {\"\" INACTIVE}", c.CAID, c.Status)
	}

	_, err = p.RegisterCertificate(ctx, "not a certificate", "", "ACTIVE")
	wantKind(t, "RegisterCertificate(garbage)", err, errkind.Invalid)
	_, err = p.RegisterCertificate(ctx, is.Issue(t, "x"), "", "SLEEPY")
	wantKind(t, "RegisterCertificate(bad status)", err, errkind.Invalid)
}

func testPrincipals(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	is := issuerFor(t, p)
	must(t, "CreateThing", p.CreateThing(ctx, "thing-1", "", nil))
	id, err := p.RegisterCertificate(ctx, is.Issue(t, "thing-1"), is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate", err)
	id2, err := p.RegisterCertificate(ctx, is.Issue(t, "thing-1"), is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate 2", err)

	must(t, "AttachThingPrincipal", p.AttachThingPrincipal(ctx, "thing-1", id))
	must(t, "AttachThingPrincipal again", p.AttachThingPrincipal(ctx, "thing-1", id))
	must(t, "AttachThingPrincipal 2", p.AttachThingPrincipal(ctx, "thing-1", id2))
	wantKind(t, "AttachThingPrincipal(missing thing)", p.AttachThingPrincipal(ctx, "missing", id), errkind.NotFound)
	wantKind(t, "AttachThingPrincipal(missing cert)", p.AttachThingPrincipal(ctx, "thing-1", certID(t, is.Issue(t, "y"))), errkind.NotFound)

	th, err := p.DescribeThing(ctx, "thing-1")
	must(t, "DescribeThing", err)
	want := []string{id, id2}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	sameStrings(t, "Principals", th.Principals, want)
}

// policyDoc is a minimal AWS IoT policy document.
const policyDoc = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}`

func sameJSON(t *testing.T, what, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("%s is not JSON: %v: %s", what, err, got)
	}
	must(t, "decode want", json.Unmarshal([]byte(want), &w))
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s = %s, want %s", what, got, want)
	}
}

func testPolicies(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	_, err := p.GetPolicy(ctx, "missing")
	wantKind(t, "GetPolicy(missing)", err, errkind.NotFound)

	created, err := p.PutPolicy(ctx, "Policy.one@x", policyDoc)
	must(t, "PutPolicy", err)
	if !created {
		t.Errorf("PutPolicy new: created = false, want true")
	}
	got, err := p.GetPolicy(ctx, "Policy.one@x")
	must(t, "GetPolicy", err)
	if got.Name != "Policy.one@x" {
		t.Errorf("GetPolicy Name = %q", got.Name)
	}
	sameJSON(t, "GetPolicy document", got.Document, policyDoc)

	doc2 := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`
	created, err = p.PutPolicy(ctx, "Policy.one@x", doc2)
	must(t, "PutPolicy replace", err)
	if created {
		t.Errorf("PutPolicy replace: created = true, want false")
	}
	got, err = p.GetPolicy(ctx, "Policy.one@x")
	must(t, "GetPolicy after replace", err)
	sameJSON(t, "GetPolicy document after replace", got.Document, doc2)

	for _, tc := range []struct{ name, doc string }{
		{"", policyDoc},
		{"bad/name", policyDoc},
		{"bad name", policyDoc},
		{"ok", `["not","an","object"]`},
		{"ok", `not json`},
		{"ok", ``},
		{"ok", `null`},
	} {
		_, err := p.PutPolicy(ctx, tc.name, tc.doc)
		wantKind(t, "PutPolicy("+tc.name+", "+tc.doc+")", err, errkind.Invalid)
	}

	is := issuerFor(t, p)
	must(t, "CreateThing", p.CreateThing(ctx, "thing-1", "", nil))
	id, err := p.RegisterCertificate(ctx, is.Issue(t, "thing-1"), is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate", err)
	must(t, "AttachThingPrincipal", p.AttachThingPrincipal(ctx, "thing-1", id))
	wantKind(t, "AttachPolicy(missing policy)", p.AttachPolicy(ctx, "missing", id), errkind.NotFound)
	wantKind(t, "AttachPolicy(missing cert)", p.AttachPolicy(ctx, "Policy.one@x", certID(t, is.Issue(t, "z"))), errkind.NotFound)
	must(t, "AttachPolicy", p.AttachPolicy(ctx, "Policy.one@x", id))
	must(t, "AttachPolicy again", p.AttachPolicy(ctx, "Policy.one@x", id))
	_, err = p.PutPolicy(ctx, "another", policyDoc)
	must(t, "PutPolicy another", err)
	must(t, "AttachPolicy another", p.AttachPolicy(ctx, "another", id))

	th, err := p.DescribeThing(ctx, "thing-1")
	must(t, "DescribeThing", err)
	sameStrings(t, "Policies", th.Policies, []string{"Policy.one@x", "another"})
}

func testThingGroups(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	_, err := p.ListThingsInGroup(ctx, "missing")
	wantKind(t, "ListThingsInGroup(missing)", err, errkind.NotFound)

	must(t, "CreateThingGroup", p.CreateThingGroup(ctx, "group-b", "the b group"))
	must(t, "CreateThingGroup again", p.CreateThingGroup(ctx, "group-b", "the b group"))
	must(t, "CreateThingGroup a", p.CreateThingGroup(ctx, "group-a", ""))
	members, err := p.ListThingsInGroup(ctx, "group-b")
	must(t, "ListThingsInGroup empty", err)
	sameStrings(t, "members of empty group", members, nil)

	for _, n := range []string{"thing-2", "thing-1"} {
		must(t, "CreateThing "+n, p.CreateThing(ctx, n, "", nil))
		must(t, "AddThingToGroup "+n, p.AddThingToGroup(ctx, n, "group-b"))
	}
	must(t, "AddThingToGroup again", p.AddThingToGroup(ctx, "thing-1", "group-b"))
	must(t, "AddThingToGroup a", p.AddThingToGroup(ctx, "thing-1", "group-a"))
	wantKind(t, "AddThingToGroup(missing thing)", p.AddThingToGroup(ctx, "missing", "group-b"), errkind.NotFound)
	wantKind(t, "AddThingToGroup(missing group)", p.AddThingToGroup(ctx, "thing-1", "missing"), errkind.NotFound)

	members, err = p.ListThingsInGroup(ctx, "group-b")
	must(t, "ListThingsInGroup", err)
	sameStrings(t, "members of group-b", members, []string{"thing-1", "thing-2"})
	th, err := p.DescribeThing(ctx, "thing-1")
	must(t, "DescribeThing", err)
	sameStrings(t, "Groups of thing-1", th.Groups, []string{"group-a", "group-b"})

	must(t, "RemoveThingFromGroup", p.RemoveThingFromGroup(ctx, "thing-1", "group-b"))
	must(t, "RemoveThingFromGroup again", p.RemoveThingFromGroup(ctx, "thing-1", "group-b"))
	members, err = p.ListThingsInGroup(ctx, "group-b")
	must(t, "ListThingsInGroup after remove", err)
	sameStrings(t, "members of group-b after remove", members, []string{"thing-2"})
	th, err = p.DescribeThing(ctx, "thing-1")
	must(t, "DescribeThing after remove", err)
	sameStrings(t, "Groups of thing-1 after remove", th.Groups, []string{"group-a"})
}

func testDeleteThingCascade(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	is := issuerFor(t, p)
	for _, n := range []string{"core-1", "dev-1", "dev-2"} {
		must(t, "CreateThing "+n, p.CreateThing(ctx, n, "", nil))
	}
	must(t, "CreateThingGroup", p.CreateThingGroup(ctx, "group-1", ""))
	must(t, "AddThingToGroup", p.AddThingToGroup(ctx, "dev-1", "group-1"))
	must(t, "AddThingToGroup dev-2", p.AddThingToGroup(ctx, "dev-2", "group-1"))
	_, err := p.PutPolicy(ctx, "pol", policyDoc)
	must(t, "PutPolicy", err)

	own, err := p.RegisterCertificate(ctx, is.Issue(t, "dev-1"), is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate own", err)
	shared, err := p.RegisterCertificate(ctx, is.Issue(t, "shared"), is.CAPEM, "ACTIVE")
	must(t, "RegisterCertificate shared", err)
	for _, a := range []struct{ thing, cert string }{{"dev-1", own}, {"dev-1", shared}, {"dev-2", shared}} {
		must(t, "AttachThingPrincipal", p.AttachThingPrincipal(ctx, a.thing, a.cert))
	}
	must(t, "AttachPolicy own", p.AttachPolicy(ctx, "pol", own))
	must(t, "AttachPolicy shared", p.AttachPolicy(ctx, "pol", shared))

	_, hasRegistrar := p.(Registrar)
	if hasRegistrar {
		registerCore(t, p, "core-1")
		failed, err := p.AssociateClientDevices(ctx, "core-1", []string{"dev-1", "dev-2"})
		must(t, "AssociateClientDevices", err)
		if len(failed) != 0 {
			t.Fatalf("AssociateClientDevices failed = %v, want none", failed)
		}
	}

	must(t, "DeleteThing", p.DeleteThing(ctx, "dev-1"))
	_, err = p.DescribeThing(ctx, "dev-1")
	wantKind(t, "DescribeThing after delete", err, errkind.NotFound)
	_, err = p.DescribeCertificate(ctx, own)
	wantKind(t, "DescribeCertificate(own) after delete", err, errkind.NotFound)
	if _, err := p.DescribeCertificate(ctx, shared); err != nil {
		t.Fatalf("DescribeCertificate(shared) after delete: %v (a certificate another thing uses must stay)", err)
	}
	members, err := p.ListThingsInGroup(ctx, "group-1")
	must(t, "ListThingsInGroup", err)
	sameStrings(t, "members after delete", members, []string{"dev-2"})
	th, err := p.DescribeThing(ctx, "dev-2")
	must(t, "DescribeThing dev-2", err)
	sameStrings(t, "dev-2 Principals", th.Principals, []string{shared})
	sameStrings(t, "dev-2 Policies", th.Policies, []string{"pol"})
	if hasRegistrar {
		list, err := p.ListClientDevices(ctx, "core-1")
		must(t, "ListClientDevices", err)
		if len(list) != 1 || list[0].ThingName != "dev-2" {
			t.Fatalf("ListClientDevices after deleting dev-1 = %v, want only dev-2", list)
		}
	}

	// A thing re-created under the same name starts clean.
	must(t, "CreateThing again", p.CreateThing(ctx, "dev-1", "", nil))
	th, err = p.DescribeThing(ctx, "dev-1")
	must(t, "DescribeThing re-created", err)
	sameStrings(t, "re-created Groups", th.Groups, nil)
	sameStrings(t, "re-created Principals", th.Principals, nil)
	sameStrings(t, "re-created Policies", th.Policies, nil)
}

func testCoreDevices(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	_, err := p.GetCoreDevice(ctx, "core-1")
	wantKind(t, "GetCoreDevice(unregistered)", err, errkind.NotFound)
	must(t, "DeleteCoreDevice(unregistered)", p.DeleteCoreDevice(ctx, "core-1"))

	must(t, "CreateThing", p.CreateThing(ctx, "core-1", "", nil))
	registerCore(t, p, "core-1")
	registerCore(t, p, "core-1") // idempotent
	c, err := p.GetCoreDevice(ctx, "core-1")
	must(t, "GetCoreDevice", err)
	if c.Name != "core-1" {
		t.Errorf("GetCoreDevice Name = %q, want core-1", c.Name)
	}
	must(t, "DeleteCoreDevice", p.DeleteCoreDevice(ctx, "core-1"))
	_, err = p.GetCoreDevice(ctx, "core-1")
	wantKind(t, "GetCoreDevice after delete", err, errkind.NotFound)
	must(t, "DeleteCoreDevice again", p.DeleteCoreDevice(ctx, "core-1"))
}

func testAssociations(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	for _, n := range []string{"core-1", "dev-b", "dev-a"} {
		must(t, "CreateThing "+n, p.CreateThing(ctx, n, "", nil))
	}
	_, err := p.AssociateClientDevices(ctx, "core-1", []string{"dev-a"})
	wantKind(t, "AssociateClientDevices(unregistered core)", err, errkind.Invalid)

	registerCore(t, p, "core-1")
	before := time.Now().Add(-time.Minute)
	failed, err := p.AssociateClientDevices(ctx, "core-1", []string{"dev-b", "dev-a", "ghost"})
	must(t, "AssociateClientDevices", err)
	if len(failed) != 1 || failed["ghost"] == "" {
		t.Fatalf("AssociateClientDevices failures = %v, want only ghost with a reason", failed)
	}
	list, err := p.ListClientDevices(ctx, "core-1")
	must(t, "ListClientDevices", err)
	if len(list) != 2 || list[0].ThingName != "dev-a" || list[1].ThingName != "dev-b" {
		t.Fatalf("ListClientDevices = %v, want dev-a, dev-b", list)
	}
	for _, a := range list {
		if a.AssociatedAt.Before(before) {
			t.Errorf("%s AssociatedAt = %v, want about now", a.ThingName, a.AssociatedAt)
		}
	}

	failed, err = p.AssociateClientDevices(ctx, "core-1", []string{"dev-a"})
	must(t, "AssociateClientDevices again", err)
	if len(failed) != 0 {
		t.Fatalf("AssociateClientDevices again failures = %v", failed)
	}
	list, err = p.ListClientDevices(ctx, "core-1")
	must(t, "ListClientDevices after repeat", err)
	if len(list) != 2 {
		t.Fatalf("ListClientDevices after repeat = %v, want 2 entries", list)
	}

	failed, err = p.DisassociateClientDevices(ctx, "core-1", []string{"dev-a"})
	must(t, "DisassociateClientDevices", err)
	if len(failed) != 0 {
		t.Fatalf("DisassociateClientDevices failures = %v", failed)
	}
	failed, err = p.DisassociateClientDevices(ctx, "core-1", []string{"dev-a"})
	must(t, "DisassociateClientDevices again", err)
	if len(failed) != 0 {
		t.Fatalf("DisassociateClientDevices again failures = %v", failed)
	}
	list, err = p.ListClientDevices(ctx, "core-1")
	must(t, "ListClientDevices after disassociate", err)
	if len(list) != 1 || list[0].ThingName != "dev-b" {
		t.Fatalf("ListClientDevices after disassociate = %v, want dev-b", list)
	}
}

func testArtifacts(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	_, _, err := p.GetArtifact(ctx, "greengrass2/artifacts/none/none/certs.zip")
	wantKind(t, "GetArtifact(missing)", err, errkind.NotFound)

	for _, tc := range []struct{ key, contentType string }{
		{"greengrass2/artifacts/core-1/core-1/certs.zip", "application/zip"},
		{"greengrass2/artifacts/core-1/core-1/installerConfig.yml", "application/yaml"},
		{"top.json", "application/json"},
		{"a/b/c/blob.bin", "application/octet-stream"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			data := []byte("content of " + tc.key)
			bucket, err := p.PutArtifact(ctx, tc.key, tc.contentType, data)
			must(t, "PutArtifact", err)
			if bucket == "" {
				t.Errorf("PutArtifact bucket is empty")
			}
			got, ct, err := p.GetArtifact(ctx, tc.key)
			must(t, "GetArtifact", err)
			if string(got) != string(data) {
				t.Errorf("GetArtifact = %q, want %q", got, data)
			}
			if ct != tc.contentType {
				t.Errorf("GetArtifact content type = %q, want %q", ct, tc.contentType)
			}
			// Overwriting replaces the bytes.
			_, err = p.PutArtifact(ctx, tc.key, tc.contentType, []byte("v2"))
			must(t, "PutArtifact overwrite", err)
			got, _, err = p.GetArtifact(ctx, tc.key)
			must(t, "GetArtifact after overwrite", err)
			if string(got) != "v2" {
				t.Errorf("GetArtifact after overwrite = %q, want v2", got)
			}
		})
	}
	_, _, err = p.GetArtifact(ctx, "greengrass2/artifacts/core-1")
	wantKind(t, "GetArtifact(a directory prefix)", err, errkind.NotFound)
}

// BadArtifactKeys are keys every provider must reject with errkind.Invalid.
var BadArtifactKeys = []string{
	"",
	"/etc/passwd",
	"../escape",
	"a/../../escape",
	"a/./b",
	".",
	"a//b",
	"a/b/",
	`a\b`,
	"a\x00b",
	"a\nb",
	"naïve",
	strings.Repeat("a", 1025),
	strings.Repeat("a", 256) + "/b",
}

func testArtifactKeys(t *testing.T, p provider.Provider) {
	ctx := context.Background()
	for _, key := range BadArtifactKeys {
		_, err := p.PutArtifact(ctx, key, "application/octet-stream", []byte("x"))
		wantKind(t, "PutArtifact("+key+")", err, errkind.Invalid)
		_, _, err = p.GetArtifact(ctx, key)
		wantKind(t, "GetArtifact("+key+")", err, errkind.Invalid)
	}
}
