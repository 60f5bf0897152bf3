package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
)

// The registry store is what the local provider persists through.
var _ local.Store = (*RegistryStore)(nil)

func newRegistryTestStore(t *testing.T) (*DB, *RegistryStore) {
	t.Helper()
	db := newTestDB(t)
	return db, db.Registry()
}

// registryRows counts the rows of a table matching a condition.
func registryRows(t *testing.T, db *DB, table, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.sql.QueryRow(db.q(`SELECT COUNT(*) FROM `+table+` WHERE `+where), args...).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestRegistryStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, s := newRegistryTestStore(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()

	if err := s.CreateThing(ctx, provider.Thing{Name: "t1", ThingType: "tt", Attributes: map[string]string{"k": "v"}, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateThing(ctx, provider.Thing{Name: "t1", CreatedAt: at})
	if !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("duplicate CreateThing: %v, want Conflict", err)
	}
	th, err := s.GetThing(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if th.ThingType != "tt" || th.Attributes["k"] != "v" || !th.CreatedAt.Equal(at) {
		t.Fatalf("GetThing = %+v", th)
	}
	if th.Groups == nil || th.Principals == nil || th.Policies == nil {
		t.Fatalf("GetThing lists must be empty, not nil: %+v", th)
	}

	c := provider.Certificate{ID: "c1", PEM: "pem", CAID: "ca", Status: "ACTIVE", CreatedAt: at}
	if err := s.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(ctx, provider.Certificate{ID: "c1", PEM: "other", Status: "INACTIVE", CreatedAt: at}); err != nil {
		t.Fatalf("PutCertificate again: %v", err)
	}
	got, err := s.GetCertificate(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Fatalf("GetCertificate = %+v, want the first registration %+v", got, c)
	}

	created, err := s.PutPolicy(ctx, provider.Policy{Name: "p", Document: "{}"}, at)
	if err != nil || !created {
		t.Fatalf("PutPolicy new = %v, %v; want created", created, err)
	}
	created, err = s.PutPolicy(ctx, provider.Policy{Name: "p", Document: `{"a":1}`}, at)
	if err != nil || created {
		t.Fatalf("PutPolicy replace = %v, %v; want replaced", created, err)
	}
	pol, err := s.GetPolicy(ctx, "p")
	if err != nil || pol.Document != `{"a":1}` {
		t.Fatalf("GetPolicy = %+v, %v", pol, err)
	}

	if err := s.MarkCoreRegistered(ctx, "core", at); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateCoreStatus(ctx, provider.CoreDevice{Name: "core", Status: "HEALTHY", LastStatus: at.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	cd, err := s.GetCoreDevice(ctx, "core")
	if err != nil || cd.Status != "HEALTHY" || !cd.LastStatus.Equal(at.Add(time.Second)) {
		t.Fatalf("GetCoreDevice = %+v, %v", cd, err)
	}
}

func TestRegistryStoreDeleteCascades(t *testing.T) {
	ctx := context.Background()
	db, s := newRegistryTestStore(t)
	now := time.Now()
	for _, n := range []string{"core", "dev"} {
		if err := s.CreateThing(ctx, provider.Thing{Name: n, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []error{
		s.PutCertificate(ctx, provider.Certificate{ID: "c-dev", PEM: "x", Status: "ACTIVE", CreatedAt: now}),
		s.AttachThingPrincipal(ctx, "dev", "c-dev"),
		s.CreateThingGroup(ctx, "g", "", now),
		s.AddThingToGroup(ctx, "dev", "g"),
		s.MarkCoreRegistered(ctx, "core", now),
	}
	if _, err := s.AssociateClientDevices(ctx, "core", []string{"dev"}, now); err != nil {
		t.Fatal(err)
	}
	_, err := s.PutPolicy(ctx, provider.Policy{Name: "p", Document: "{}"}, now)
	steps = append(steps, err, s.AttachPolicy(ctx, "p", "c-dev"))
	for i, err := range steps {
		if err != nil {
			t.Fatalf("setup step %d: %v", i, err)
		}
	}

	if err := s.DeleteThing(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ table, where, arg string }{
		{"registry_things", "name = ?", "dev"},
		{"registry_group_members", "thing_name = ?", "dev"},
		{"registry_thing_principals", "thing_name = ?", "dev"},
		{"registry_certificates", "id = ?", "c-dev"},
		{"registry_policy_attachments", "cert_id = ?", "c-dev"},
		{"registry_client_devices", "device_name = ?", "dev"},
	} {
		if n := registryRows(t, db, c.table, c.where, c.arg); n != 0 {
			t.Errorf("%s still has %d rows for %s after DeleteThing", c.table, n, c.arg)
		}
	}
	if n := registryRows(t, db, "registry_policies", "name = ?", "p"); n != 1 {
		t.Errorf("the policy itself was deleted with the thing")
	}

	if err := s.CreateThing(ctx, provider.Thing{Name: "other", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AssociateClientDevices(ctx, "core", []string{"other"}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCoreDevice(ctx, "core"); err != nil {
		t.Fatal(err)
	}
	if n := registryRows(t, db, "registry_client_devices", "core_name = ?", "core"); n != 0 {
		t.Errorf("DeleteCoreDevice left %d associations", n)
	}
	if _, err := s.GetCoreDevice(ctx, "core"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetCoreDevice after delete: %v, want NotFound", err)
	}
}

// TestAssociateClientDevices checks that a core's client devices are
// associated and disassociated many at a time, more than one IN list's
// worth: things only (the others are returned, untouched), idempotently (an
// existing association keeps its timestamp), and per core.
func TestAssociateClientDevices(t *testing.T) {
	ctx := context.Background()
	db, s := newRegistryTestStore(t)
	first, later := time.UnixMilli(1_700_000_000_000).UTC(), time.UnixMilli(1_700_000_999_000).UTC()
	var devices []string
	for i := range batchRows + 20 {
		name := fmt.Sprintf("dev-%04d", i)
		devices = append(devices, name)
		if err := s.CreateThing(ctx, provider.Thing{Name: name, CreatedAt: first}); err != nil {
			t.Fatal(err)
		}
	}
	missing, err := s.AssociateClientDevices(ctx, "core", devices[:10], first)
	if err != nil || len(missing) != 0 {
		t.Fatalf("AssociateClientDevices(first ten) = %v, %v; want none missing", missing, err)
	}
	ask := append([]string{"ghost-b"}, devices...)
	ask = append(ask, "ghost-a")
	missing, err = s.AssociateClientDevices(ctx, "core", ask, later)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ghost-b", "ghost-a"}; !slices.Equal(missing, want) {
		t.Errorf("missing = %v, want %v (in the order asked)", missing, want)
	}
	list, err := s.ListClientDevices(ctx, "core")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(devices) {
		t.Fatalf("core has %d associations, want %d", len(list), len(devices))
	}
	for i, a := range list {
		want := later
		if i < 10 {
			want = first // associated before: kept as it was
		}
		if a.ThingName != devices[i] || !a.AssociatedAt.Equal(want) {
			t.Fatalf("association %d = %s at %v, want %s at %v", i, a.ThingName, a.AssociatedAt, devices[i], want)
		}
	}
	if n := registryRows(t, db, "registry_client_devices", "device_name LIKE ?", "ghost%"); n != 0 {
		t.Errorf("%d associations of things that do not exist", n)
	}

	if _, err := s.AssociateClientDevices(ctx, "other-core", devices[:3], first); err != nil {
		t.Fatal(err)
	}
	if err := s.DisassociateClientDevices(ctx, "core", append([]string{"ghost"}, devices[5:]...)); err != nil {
		t.Fatal(err)
	}
	if n := registryRows(t, db, "registry_client_devices", "core_name = ?", "core"); n != 5 {
		t.Errorf("core has %d associations after disassociating all but 5, want 5", n)
	}
	if n := registryRows(t, db, "registry_client_devices", "core_name = ?", "other-core"); n != 3 {
		t.Errorf("another core has %d associations, want its 3", n)
	}
}

// TestGetThingPolicies checks a thing's policies are those of all its
// principals, each once, in name order.
func TestGetThingPolicies(t *testing.T) {
	ctx := context.Background()
	_, s := newRegistryTestStore(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()
	if err := s.CreateThing(ctx, provider.Thing{Name: "t", CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	attach := map[string][]string{"c1": {"pol-b", "pol-a"}, "c2": {"pol-c", "pol-b"}}
	for cert, policies := range attach {
		if err := s.PutCertificate(ctx, provider.Certificate{ID: cert, PEM: "pem", Status: "ACTIVE", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.AttachThingPrincipal(ctx, "t", cert); err != nil {
			t.Fatal(err)
		}
		for _, p := range policies {
			if _, err := s.PutPolicy(ctx, provider.Policy{Name: p, Document: "{}"}, at); err != nil {
				t.Fatal(err)
			}
			if err := s.AttachPolicy(ctx, p, cert); err != nil {
				t.Fatal(err)
			}
		}
	}
	th, err := s.GetThing(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(th.Policies); got != "[pol-a pol-b pol-c]" {
		t.Fatalf("policies = %s, want [pol-a pol-b pol-c]", got)
	}
}
