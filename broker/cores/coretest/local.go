package coretest

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// LocalParts are the real parts of local mode that whole-batch tests work
// on, as `ggfleet serve` wires them: a migrated SQLite database, its
// certificate authority and the local provider on it.
type LocalParts struct {
	DB       *sqlstore.DB
	CA       *ca.Authority
	Provider *local.Provider
}

// Local opens LocalParts in t's temporary directory, closed when t ends.
// Tasks submitted to the database are not enqueued: run their batches with
// RunAll.
func Local(t *testing.T) LocalParts {
	t.Helper()
	dir := t.TempDir()
	db := sqlstoretest.OpenIn(t, dir)
	db.SetEnqueuer(func(context.Context, *sql.Tx, []tasks.BatchRef) error { return nil })
	key, err := ca.LoadOrCreateSecretsKey(filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	authority := ca.New(ca.Config{Store: db, SecretsKey: key})
	if _, _, err := authority.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	lp, err := local.New(local.Config{Store: db.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lp.Close() })
	return LocalParts{DB: db, CA: authority, Provider: lp}
}

// CheckCertsZip asserts that the thing name holds exactly one
// certificate, the one its certs.zip holds, stored with its private key.
func CheckCertsZip(t *testing.T, prov provider.Provider, name string) {
	t.Helper()
	ctx := context.Background()
	th, err := prov.DescribeThing(ctx, name)
	if err != nil {
		t.Fatalf("thing %s: %v", name, err)
	}
	data, _, err := prov.GetArtifact(ctx, thingflow.CertsKey(name))
	if err != nil {
		t.Fatalf("certs.zip of %s: %v", name, err)
	}
	files, err := thingflow.ReadZip(data)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificate(files["certs/cert.pem"])
	if err != nil {
		t.Fatalf("certs.zip cert of %s: %v", name, err)
	}
	if !slices.Equal(th.Principals, []string{certs.ID(c)}) || files["certs/private.key"] == "" {
		t.Fatalf("thing %s principals = %v, want only %s (certs.zip, with its key)", name, th.Principals, certs.ID(c))
	}
}

// ThingExists reports whether prov has a thing name.
func ThingExists(t *testing.T, prov provider.Provider, name string) bool {
	t.Helper()
	_, err := prov.DescribeThing(context.Background(), name)
	if err != nil && !errkind.Is(err, errkind.NotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// FlakyProvider wraps a provider for whole-batch tests: CreateThing of the
// name in FailOnce fails transiently once, of the name in FailAlways until
// it is cleared; DescribeThing calls are counted in Describes.
type FlakyProvider struct {
	provider.Provider
	FailOnce   atomic.Value // string
	FailAlways atomic.Value // string
	Describes  atomic.Int32
}

// DescribeThing counts the call and asks the wrapped provider.
func (p *FlakyProvider) DescribeThing(ctx context.Context, name string) (provider.Thing, error) {
	p.Describes.Add(1)
	return p.Provider.DescribeThing(ctx, name)
}

// CreateThing fails as set, else asks the wrapped provider.
func (p *FlakyProvider) CreateThing(ctx context.Context, name, thingType string, attributes map[string]string) error {
	if p.FailOnce.CompareAndSwap(name, "") || p.FailAlways.Load() == name {
		return errkind.New(errkind.Unavailable, "database is locked")
	}
	return p.Provider.CreateThing(ctx, name, thingType, attributes)
}
