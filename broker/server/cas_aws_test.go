package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

// awsCAEnv is an aws provider on the fake with a broker database and CA.
type awsCAEnv struct {
	fake      *awsfake.Fake
	prov      *awsprov.Provider
	db        *sqlstore.DB
	authority *ca.Authority
}

func newAWSCAEnv(t *testing.T) awsCAEnv {
	t.Helper()
	prov, fake := awstest.NewProvider(t, func(c *awsprov.Config) { c.MaxAttempts = 1 })
	b := awstest.NewBroker(t)
	db, authority := b.DB, b.Authority
	return awsCAEnv{fake: fake, prov: prov, db: db, authority: authority}
}

// TestRegisterCAsAtStart: every CA the broker holds is registered; a
// refused registration is a start-up error naming the IAM actions; a CA
// deactivated in AWS IoT does not stop the start.
func TestRegisterCAsAtStart(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	e := newAWSCAEnv(t)
	extra, err := e.authority.Generate(ctx, "second", 0, "")
	if err != nil {
		t.Fatal(err)
	}

	e.fake.FailNext("RegisterCACertificate", "AccessDeniedException")
	err = registerCAs(ctx, e.prov, e.db, e.authority, log)
	if err == nil || !strings.Contains(err.Error(), "iot:RegisterCACertificate") {
		t.Fatalf("registerCAs with the action denied: err = %v, want an error naming iot:RegisterCACertificate", err)
	}

	if err := registerCAs(ctx, e.prov, e.db, e.authority, log); err != nil {
		t.Fatal(err)
	}
	list, err := e.authority.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if st, ok := e.fake.CAStatus(c.CertificatePem); !ok || st != "ACTIVE" {
			t.Errorf("CA %s: status %q, registered %v, want ACTIVE", c.ID, st, ok)
		}
	}

	e.fake.SetCAStatus(extra.CertificatePem, "INACTIVE")
	if err := registerCAs(ctx, e.prov, e.db, e.authority, log); err != nil {
		t.Fatalf("registerCAs with a CA deactivated in AWS IoT: %v", err)
	}
	if st, _ := e.fake.CAStatus(extra.CertificatePem); st != "INACTIVE" {
		t.Fatalf("status = %q, want the operator's INACTIVE kept", st)
	}
}

// TestRegisteringCAs: a CA generated or imported through the API in aws
// mode is registered before the request answers; when AWS refuses, the
// answer is Unavailable and says the next start registers it.
func TestRegisteringCAs(t *testing.T) {
	ctx := context.Background()
	e := newAWSCAEnv(t)
	svc := caService(e.authority, cloud{aws: e.prov})

	gen, err := svc.Generate(ctx, "generated", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := e.fake.CAStatus(gen.CertificatePem); !ok || st != "ACTIVE" {
		t.Fatalf("generated CA: status %q, registered %v", st, ok)
	}

	e.fake.FailNext("GetRegistrationCode", "AccessDeniedException")
	failed, err := svc.Generate(ctx, "refused", 0, "")
	if !errkind.Is(err, errkind.Unavailable) || !strings.Contains(err.Error(), "next start") {
		t.Fatalf("Generate with AWS refusing: err = %v, want Unavailable saying the next start registers it", err)
	}
	if _, err := e.authority.Get(ctx, failed.ID); err != nil {
		t.Fatalf("the CA AWS refused is not stored: %v", err)
	}

	if _, ok := caService(e.authority, cloud{}).(*ca.Authority); !ok {
		t.Fatal("local mode should use the authority itself")
	}
}
