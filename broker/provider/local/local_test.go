package local_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/provider/providertest"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// newLocal returns a local provider on a fresh SQLite database and
// artifacts directory.
// newLocal returns a provider on a migrated SQLite database, keeping its
// artifacts there, and the artifacts directory it was given (not created).
func newLocal(t *testing.T) (*local.Provider, string) {
	t.Helper()
	return newLocalWith(t, false)
}

// newLocalFiles is newLocal with the artifacts kept as files (DirArtifacts).
func newLocalFiles(t *testing.T) (*local.Provider, string) {
	t.Helper()
	return newLocalWith(t, true)
}

func newLocalWith(t *testing.T, files bool) (*local.Provider, string) {
	t.Helper()
	dir := t.TempDir()
	db := sqlstoretest.OpenIn(t, dir)
	artifacts := filepath.Join(dir, "artifacts")
	cfg := local.Config{Store: db.Registry(), ArtifactsDir: artifacts}
	if files {
		d, err := local.NewDirArtifacts(artifacts)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Artifacts = d
	}
	p, err := local.New(cfg)
	if err != nil {
		t.Fatalf("local.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p, artifacts
}

func TestRegistryProviderSuite(t *testing.T) {
	providertest.Run(t, func(t *testing.T) provider.Provider {
		p, _ := newLocal(t)
		return p
	})
}

func TestRegistryCoreStatus(t *testing.T) {
	ctx := context.Background()
	p, _ := newLocal(t)
	if err := p.MarkCoreRegistered(ctx, "core-1"); err != nil {
		t.Fatal(err)
	}
	c, err := p.GetCoreDevice(ctx, "core-1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != "" {
		t.Fatalf("Status before any health report = %q, want empty", c.Status)
	}
	at := time.UnixMilli(1_700_000_000_123).UTC()
	want := provider.CoreDevice{Name: "core-1", Status: "HEALTHY", CoreVersion: "2.12.0", Platform: "linux", Architecture: "amd64", LastStatus: at}
	if err := p.UpdateCoreStatus(ctx, want); err != nil {
		t.Fatal(err)
	}
	// Registering again keeps the reported status.
	if err := p.MarkCoreRegistered(ctx, "core-1"); err != nil {
		t.Fatal(err)
	}
	c, err = p.GetCoreDevice(ctx, "core-1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != want.Name || c.Status != want.Status || c.CoreVersion != want.CoreVersion ||
		c.Platform != want.Platform || c.Architecture != want.Architecture || !c.LastStatus.Equal(at) {
		t.Fatalf("GetCoreDevice = %+v, want %+v", c, want)
	}

	// A health report registers a core that never enrolled.
	if err := p.UpdateCoreStatus(ctx, provider.CoreDevice{Name: "core-2", Status: "UNHEALTHY"}); err != nil {
		t.Fatal(err)
	}
	c, err = p.GetCoreDevice(ctx, "core-2")
	if err != nil {
		t.Fatalf("GetCoreDevice after health report: %v", err)
	}
	if c.Status != "UNHEALTHY" || c.LastStatus.IsZero() {
		t.Fatalf("GetCoreDevice = %+v, want UNHEALTHY with a LastStatus", c)
	}
}

func TestRegistryCertificateActive(t *testing.T) {
	ctx := context.Background()
	p, _ := newLocal(t)
	is := providertest.NewIssuer(t)
	if err := p.CreateThing(ctx, "core-1", "", nil); err != nil {
		t.Fatal(err)
	}
	active, err := p.RegisterCertificate(ctx, is.Issue(t, "core-1"), is.CAPEM, "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	inactive, err := p.RegisterCertificate(ctx, is.Issue(t, "core-1"), is.CAPEM, "INACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{active, inactive} {
		if err := p.AttachThingPrincipal(ctx, "core-1", id); err != nil {
			t.Fatal(err)
		}
	}
	check := func(id string, want bool) {
		t.Helper()
		got, err := p.CertificateActive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("CertificateActive(%s) = %v, want %v", id, got, want)
		}
	}
	check(active, true)
	check(inactive, false)
	check("0000", false)
	if err := p.DeleteThing(ctx, "core-1"); err != nil {
		t.Fatal(err)
	}
	check(active, false) // a deleted core's certificate must no longer connect
}

func TestRegistryThingGroupsForThing(t *testing.T) {
	ctx := context.Background()
	p, _ := newLocal(t)
	if err := p.CreateThing(ctx, "core-1", "", nil); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"g-2", "g-1"} {
		if err := p.CreateThingGroup(ctx, g, ""); err != nil {
			t.Fatal(err)
		}
		if err := p.AddThingToGroup(ctx, "core-1", g); err != nil {
			t.Fatal(err)
		}
	}
	got, err := p.ListThingGroupsForThing(ctx, "core-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "g-1" || got[1] != "g-2" {
		t.Fatalf("ListThingGroupsForThing = %v, want [g-1 g-2]", got)
	}
	got, err = p.ListThingGroupsForThing(ctx, "nobody")
	if err != nil || len(got) != 0 {
		t.Fatalf("ListThingGroupsForThing(nobody) = %v, %v; want empty", got, err)
	}
}

func TestArtifactFiles(t *testing.T) {
	ctx := context.Background()
	p, dir := newLocalFiles(t)
	key := "greengrass2/artifacts/core-1/core-1/certs.zip"
	bucket, err := p.PutArtifact(ctx, key, "application/zip", []byte("PK"))
	if err != nil {
		t.Fatal(err)
	}
	if bucket != "local" {
		t.Fatalf("bucket = %q, want local", bucket)
	}
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key)))
	if err != nil {
		t.Fatalf("artifact not stored under the artifacts dir: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("artifact mode = %v, want 0600 (certs.zip holds a private key)", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Join(dir, "greengrass2", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm()&0o077 != 0 {
		t.Errorf("artifact dir mode = %v, want no group/other access", di.Mode().Perm())
	}
	entries, err := os.ReadDir(filepath.Join(dir, "greengrass2", "artifacts", "core-1", "core-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("artifact dir holds %d entries, want only certs.zip (no temporary files left)", len(entries))
	}
}

func TestArtifactSymlinkEscape(t *testing.T) {
	ctx := context.Background()
	p, dir := newLocalFiles(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Skipf("cannot create symlinks here: %v", err)
	}
	data, _, err := p.GetArtifact(ctx, "link/secret")
	if err == nil {
		t.Fatalf("GetArtifact through a symlink leaving the artifacts dir returned %q, want an error", data)
	}
	if _, err := p.PutArtifact(ctx, "link/planted", "", []byte("x")); err == nil {
		t.Fatal("PutArtifact through a symlink leaving the artifacts dir succeeded, want an error")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Fatal("PutArtifact wrote outside the artifacts dir")
	}
}

// ggfleet's store keeps artifacts in its database; the files an earlier
// version wrote to the artifacts directory are still served until replaced,
// and nothing new is written there.
func TestArtifactsInDatabaseWithLegacyFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := sqlstoretest.OpenIn(t, dir)
	artifacts := filepath.Join(dir, "artifacts")
	old, err := local.NewDirArtifacts(artifacts) // as an earlier version left it
	if err != nil {
		t.Fatal(err)
	}
	legacyKey := "greengrass2/artifacts/old/old/certs.zip"
	if err := old.PutArtifact(ctx, legacyKey, []byte("old")); err != nil {
		t.Fatal(err)
	}
	old.Close()

	p, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: artifacts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if data, typ, err := p.GetArtifact(ctx, legacyKey); err != nil || string(data) != "old" || typ != "application/zip" {
		t.Fatalf("legacy artifact = %q, %q, %v; want the file's bytes", data, typ, err)
	}
	newKey := "greengrass2/artifacts/new/new/certs.zip"
	for _, k := range []string{newKey, legacyKey} {
		if _, err := p.PutArtifact(ctx, k, "application/zip", []byte("new")); err != nil {
			t.Fatal(err)
		}
		if data, _, err := p.GetArtifact(ctx, k); err != nil || string(data) != "new" {
			t.Fatalf("%s after PutArtifact = %q, %v; want new", k, data, err)
		}
	}
	if _, err := os.Stat(filepath.Join(artifacts, filepath.FromSlash(newKey))); !os.IsNotExist(err) {
		t.Fatalf("a new artifact was written as a file (%v); want it in the database only", err)
	}
	if data, err := db.Artifacts().GetArtifact(ctx, newKey); err != nil || string(data) != "new" {
		t.Fatalf("database holds %q, %v for the new artifact", data, err)
	}
	if _, _, err := p.GetArtifact(ctx, "greengrass2/artifacts/none/none/certs.zip"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("missing artifact: %v, want NotFound", err)
	}

	// Without an artifacts directory, none is created.
	fresh := filepath.Join(dir, "fresh")
	p2, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: fresh})
	if err != nil {
		t.Fatal(err)
	}
	p2.Close()
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatalf("artifacts dir created (%v); want none when the database keeps them", err)
	}
}

func TestRegistryNew(t *testing.T) {
	if _, err := local.New(local.Config{ArtifactsDir: t.TempDir()}); err == nil {
		t.Error("New without a Store succeeded")
	}
	_, err := local.New(local.Config{Store: nil, ArtifactsDir: ""})
	if err == nil {
		t.Error("New without an artifacts dir succeeded")
	}
	if errkind.Is(err, errkind.NotFound) {
		t.Error("New error has kind NotFound")
	}
}

// The deleters provisioning uses to undo a failed run refuse to delete what
// is still in use, as AWS IoT does.
func TestDeleteCertificateAndPolicy(t *testing.T) {
	ctx := context.Background()
	p, _ := newLocal(t)
	certPEM := providertest.NewIssuer(t).Issue(t, "thing-1")
	id, err := p.RegisterCertificate(ctx, certPEM, "", "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PutPolicy(ctx, "pol", `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachPolicy(ctx, "pol", id); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateThing(ctx, "thing-1", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachThingPrincipal(ctx, "thing-1", id); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteCertificate(ctx, id); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("delete attached certificate: %v, want Conflict", err)
	}
	if err := p.DeletePolicy(ctx, "pol"); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("delete attached policy: %v, want Conflict", err)
	}
	// Once the thing is gone its certificate goes with it; the policy is free.
	if err := p.DeleteThing(ctx, "thing-1"); err != nil {
		t.Fatal(err)
	}
	if err := p.DeletePolicy(ctx, "pol"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetPolicy(ctx, "pol"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("policy after delete: %v", err)
	}
	// An unattached certificate can be deleted; deleting twice is fine.
	id2, err := p.RegisterCertificate(ctx, certPEM, "", "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := p.DeleteCertificate(ctx, id2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.DescribeCertificate(ctx, id2); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("certificate after delete: %v", err)
	}
}

func TestRegisterCertificateCAID(t *testing.T) {
	ctx := context.Background()
	p, _ := newLocal(t)
	first, second := providertest.NewIssuer(t), providertest.NewIssuer(t)
	caID := func(is *providertest.Issuer) string {
		t.Helper()
		c, err := certs.ParseCertificate(is.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		return certs.ID(c)
	}
	tests := []struct {
		name   string
		is     *providertest.Issuer
		caPEM  string
		wantCA string
	}{
		{"first CA", first, first.CAPEM, caID(first)},
		{"first CA again", first, first.CAPEM, caID(first)},
		{"second CA", second, second.CAPEM, caID(second)},
		{"no CA", first, "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := p.RegisterCertificate(ctx, tt.is.Issue(t, fmt.Sprintf("core-%d", i)), tt.caPEM, "ACTIVE")
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.DescribeCertificate(ctx, id)
			if err != nil || c.CAID != tt.wantCA {
				t.Fatalf("certificate's CA = %q, %v; want %q", c.CAID, err, tt.wantCA)
			}
		})
	}
	if _, err := p.RegisterCertificate(ctx, first.Issue(t, "core-x"), "not a certificate", "ACTIVE"); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("a bad CA certificate: err = %v, want Invalid", err)
	}
}
