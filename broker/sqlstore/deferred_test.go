package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
)

// TestDeferredInserts checks a transaction that holds its inserts
// (WithDeferredInserts): the rows reach the database a table at a time and
// in an order their foreign keys accept, a read sees every write before it
// (a keyed lookup sends them only when it needs them), an upsert written
// twice keeps its last row, a held row that fails fails the commit with
// nothing written, and held rows are not undone by a failing nested call.
func TestDeferredInserts(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_123).UTC()
	cert := func(id string) provider.Certificate {
		return provider.Certificate{ID: id, PEM: "pem of " + id, CAID: "ca", Status: "ACTIVE", CreatedAt: now}
	}
	// held returns how many rows the transaction in ctx holds.
	held := func(ctx context.Context, db *DB) int {
		n := 0
		for _, h := range ctxTx(ctx, db).held {
			n += len(h.rows)
		}
		return n
	}

	t.Run("rows are sent a table at a time, after the rows they point to", func(t *testing.T) {
		ctx := WithDeferredInserts(context.Background())
		db := newTestDB(t)
		reg := db.Registry()
		if _, err := reg.PutPolicy(ctx, provider.Policy{Name: "p", Document: "{}"}, now); err != nil {
			t.Fatal(err)
		}
		err := db.Atomically(ctx, func(ctx context.Context) error {
			for _, n := range []string{"a", "b"} {
				for _, err := range []error{
					reg.CreateThingGroup(ctx, n, "group "+n, now),
					reg.CreateThing(ctx, testThing(n)),
					reg.PutCertificate(ctx, cert("c-"+n)),
					reg.AttachThingPrincipal(ctx, n, "c-"+n),
					reg.AttachPolicy(ctx, "p", "c-"+n),
					db.Artifacts().PutArtifact(ctx, "k-"+n, []byte("first")),
					db.Artifacts().PutArtifact(ctx, "k-"+n, []byte("second")),
				} {
					if err != nil {
						return err
					}
				}
			}
			if n := held(ctx, db); n != 12 {
				t.Errorf("%d rows held, want 12 (6 tables, 2 rows each: the artifact written twice kept once)", n)
			}
			if got := len(ctxTx(ctx, db).held); got != 6 {
				t.Errorf("rows held for %d tables, want 6", got)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b"} {
			th, err := reg.GetThing(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			if len(th.Principals) != 1 || th.Principals[0] != "c-"+n || len(th.Policies) != 1 || th.Policies[0] != "p" {
				t.Errorf("thing %s = %+v, want principal c-%s with policy p", n, th, n)
			}
			if data, err := db.Artifacts().GetArtifact(ctx, "k-"+n); err != nil || string(data) != "second" {
				t.Errorf("artifact k-%s = %q, %v; want the second write", n, data, err)
			}
		}
	})

	t.Run("a keyed lookup sends the held rows only when they hold its key", func(t *testing.T) {
		ctx := WithDeferredInserts(context.Background())
		db := newTestDB(t)
		reg := db.Registry()
		err := db.Atomically(ctx, func(ctx context.Context) error {
			if err := reg.CreateThing(ctx, testThing("a")); err != nil {
				return err
			}
			if _, err := reg.GetThing(ctx, "other"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("GetThing(other) = %v, want NotFound", err)
			}
			if _, err := reg.GetCoreDevice(ctx, "a"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("GetCoreDevice(a) = %v, want NotFound", err)
			}
			if n := held(ctx, db); n != 1 {
				t.Errorf("after lookups of other keys %d rows held, want the thing still held", n)
			}
			if _, err := reg.GetThing(ctx, "a"); err != nil {
				t.Errorf("GetThing(a) inside the transaction: %v", err)
			}
			if n := held(ctx, db); n != 0 {
				t.Errorf("after the lookup of a held key %d rows held, want them sent", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a held row that fails fails the commit and nothing is written", func(t *testing.T) {
		ctx := WithDeferredInserts(context.Background())
		db := newTestDB(t)
		reg := db.Registry()
		if err := reg.CreateThing(ctx, testThing("taken")); err != nil {
			t.Fatal(err)
		}
		err := db.Atomically(ctx, func(ctx context.Context) error {
			if err := reg.CreateThing(ctx, testThing("fresh")); err != nil {
				return err
			}
			return reg.CreateThing(ctx, testThing("taken")) // held: the conflict comes with the commit
		})
		if !errkind.Is(err, errkind.Conflict) {
			t.Fatalf("Atomically = %v, want the conflict", err)
		}
		if _, err := reg.GetThing(ctx, "fresh"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("GetThing(fresh) after the failed commit = %v, want NotFound", err)
		}
		err = db.Atomically(ctx, func(ctx context.Context) error {
			return reg.AttachThingPrincipal(ctx, "ghost", "no-such-certificate")
		})
		if err == nil {
			t.Error("a principal of a missing thing and certificate was committed")
		}
	})

	t.Run("held rows are not undone by a failing nested call", func(t *testing.T) {
		ctx := WithDeferredInserts(context.Background())
		db := newTestDB(t)
		reg := db.Registry()
		err := db.Atomically(ctx, func(ctx context.Context) error {
			if err := reg.CreateThing(ctx, testThing("kept")); err != nil {
				return err
			}
			nested := db.Atomically(ctx, func(ctx context.Context) error {
				if err := reg.CreateThing(ctx, testThing("undone")); err != nil {
					return err
				}
				return fmt.Errorf("boom")
			})
			if nested == nil {
				t.Error("the nested call did not fail")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.GetThing(ctx, "kept"); err != nil {
			t.Errorf("GetThing(kept) = %v, want it committed", err)
		}
		if _, err := reg.GetThing(ctx, "undone"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("GetThing(undone) = %v, want NotFound", err)
		}
	})

	t.Run("more rows than one statement takes", func(t *testing.T) {
		ctx := WithDeferredInserts(context.Background())
		db := newTestDB(t)
		reg := db.Registry()
		n := maxDeferredArgs/len(insertGroup.columns) + 1
		err := db.Atomically(ctx, func(ctx context.Context) error {
			for i := range n {
				if err := reg.CreateThingGroup(ctx, fmt.Sprintf("g%05d", i), "", now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM registry_thing_groups`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Errorf("%d groups, want %d", got, n)
		}
	})
}
