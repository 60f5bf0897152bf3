package aws_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggfleet/ggfleet/broker/ca"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// identityEnv is what BrokerIdentity needs, on a SQLite database.
type identityEnv struct {
	db         *sqlstore.DB
	authority  *ca.Authority
	secretsKey []byte
}

func newIdentityEnv(t *testing.T) identityEnv {
	t.Helper()
	b := awstest.NewBroker(t)
	return identityEnv{db: b.DB, authority: b.Authority, secretsKey: b.SecretsKey}
}

func (e identityEnv) config() awsprov.IdentityConfig {
	return awsprov.IdentityConfig{Store: e.db, Issuer: e.authority, SecretsKey: e.secretsKey}
}

func TestBrokerIdentity(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, nil)
	env := newIdentityEnv(t)
	def, err := env.authority.Default(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RegisterCA(ctx, env.authority, def.ID, def.CertificatePem); err != nil {
		t.Fatal(err)
	}

	first, err := p.BrokerIdentity(ctx, env.config())
	if err != nil {
		t.Fatal(err)
	}
	id := certs.ID(first.Leaf)
	if first.Leaf.Subject.CommonName != awsprov.BrokerCommonName {
		t.Fatalf("CN = %q", first.Leaf.Subject.CommonName)
	}
	c, err := p.DescribeCertificate(ctx, id)
	if err != nil || c.Status != "ACTIVE" {
		t.Fatalf("registered certificate = %+v, %v", c, err)
	}
	pol, err := p.GetPolicy(ctx, awsprov.BrokerPolicyName)
	if err != nil || !strings.Contains(pol.Document, "ggfleet-broker-*") {
		t.Fatalf("broker policy = %+v, %v", pol, err)
	}
	attached, err := rawIoT(fake).ListAttachedPolicies(ctx, &iot.ListAttachedPoliciesInput{Target: ptr("arn:aws:iot:" + awsfake.Region + ":" + awsfake.Account + ":cert/" + id)})
	if err != nil || len(attached.Policies) != 1 || *attached.Policies[0].PolicyName != awsprov.BrokerPolicyName {
		t.Fatalf("attached policies = %+v, %v", attached, err)
	}

	// The key is stored encrypted: the setting holds neither the PEM nor
	// the DER of the private key.
	raw, ok, err := env.db.Setting(ctx, "aws.brokerIdentity")
	if err != nil || !ok {
		t.Fatalf("setting: %v %v", ok, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(first.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(raw, "PRIVATE KEY") || strings.Contains(raw, hex.EncodeToString(der[:16])) {
		t.Fatalf("the stored identity holds the key in clear: %s", raw)
	}

	// A restart (or another replica) reuses it.
	again, err := p.BrokerIdentity(ctx, env.config())
	if err != nil {
		t.Fatal(err)
	}
	if certs.ID(again.Leaf) != id {
		t.Fatalf("second start made certificate %s, want the stored %s", certs.ID(again.Leaf), id)
	}
	if n := fake.Calls("RegisterCertificate") + fake.Calls("RegisterCertificateWithoutCA"); n != 1 {
		t.Fatalf("%d certificate registrations, want 1", n)
	}

	// Another secrets key cannot read it.
	wrong := env.config()
	wrong.SecretsKey = make([]byte, ca.SecretsKeySize)
	if _, err := p.BrokerIdentity(ctx, wrong); err == nil || !strings.Contains(err.Error(), "secrets key") {
		t.Fatalf("with another secrets key: %v", err)
	}

	// A certificate an operator deactivated is replaced.
	if _, err := rawIoT(fake).UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: &id, NewStatus: iottypes.CertificateStatusInactive}); err != nil {
		t.Fatal(err)
	}
	renewed, err := p.BrokerIdentity(ctx, env.config())
	if err != nil {
		t.Fatal(err)
	}
	if certs.ID(renewed.Leaf) == id {
		t.Fatal("a deactivated certificate was reused")
	}

	// A certificate close to its expiry is replaced too.
	soon := env.config()
	soon.Now = func() time.Time { return renewed.Leaf.NotAfter.Add(-24 * time.Hour) }
	later, err := p.BrokerIdentity(ctx, soon)
	if err != nil {
		t.Fatal(err)
	}
	if certs.ID(later.Leaf) == certs.ID(renewed.Leaf) {
		t.Fatal("a certificate expiring tomorrow was reused")
	}
}

// TestAmazonRootCA1 pins the embedded root by its well-known fingerprint.
func TestAmazonRootCA1(t *testing.T) {
	c, err := certs.ParseCertificate(awsprov.AmazonRootCA1PEM)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.Raw)
	const want = "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"
	if got := hex.EncodeToString(sum[:]); got != want || c.Subject.CommonName != "Amazon Root CA 1" {
		t.Fatalf("embedded root = %s (%s), want Amazon Root CA 1 %s", c.Subject.CommonName, got, want)
	}
}

// TestBrokerPolicy checks the real policy documents with the fake's
// evaluator: the broker keeps to its client ids and ggfleet/ topics, an
// agent to its own client id and topics.
func TestBrokerPolicy(t *testing.T) {
	arn := func(r string) string { return "arn:aws:iot:" + awsfake.Region + ":" + awsfake.Account + ":" + r }
	broker := awsfake.PolicyVars{CommonName: awsprov.BrokerCommonName, ClientID: "ggfleet-broker-r1"}
	agent := awsfake.PolicyVars{CommonName: "core-1", ClientID: "core-1-ggagent"}
	tests := []struct {
		name, doc, action, resource string
		vars                        awsfake.PolicyVars
		want                        bool
	}{
		{"broker connects as a replica", awsprov.BrokerPolicyDocument, awsfake.ActionConnect, arn("client/ggfleet-broker-r1"), broker, true},
		{"broker as an agent", awsprov.BrokerPolicyDocument, awsfake.ActionConnect, arn("client/core-1-ggagent"), broker, false},
		{"broker shared subscription", awsprov.BrokerPolicyDocument, awsfake.ActionSubscribe, arn("topicfilter/$share/ggfleet/ggfleet/things/+/health"), broker, true},
		{"broker shared subscription of another group", awsprov.BrokerPolicyDocument, awsfake.ActionSubscribe, arn("topicfilter/$share/other/ggfleet/things/+/health"), broker, false},
		{"broker receives health", awsprov.BrokerPolicyDocument, awsfake.ActionReceive, arn("topic/ggfleet/things/core-1/health"), broker, true},
		{"broker publishes a patch job", awsprov.BrokerPolicyDocument, awsfake.ActionPublish, arn("topic/ggfleet/things/core-1/patches/p1/start"), broker, true},
		{"broker outside ggfleet/", awsprov.BrokerPolicyDocument, awsfake.ActionPublish, arn("topic/$aws/things/core-1/shadow/update"), broker, false},
		{"agent connects", awsprov.AgentPolicyDocument, awsfake.ActionConnect, arn("client/core-1-ggagent"), agent, true},
		{"agent as a broker replica", awsprov.AgentPolicyDocument, awsfake.ActionConnect, arn("client/ggfleet-broker-r1"), agent, false},
		{"agent reads every thing's health", awsprov.AgentPolicyDocument, awsfake.ActionSubscribe, arn("topicfilter/$share/ggfleet/ggfleet/things/+/health"), agent, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := awsfake.Allowed([]string{tt.doc}, tt.action, tt.resource, tt.vars); got != tt.want {
				t.Fatalf("Allowed = %v, want %v", got, tt.want)
			}
		})
	}
}
