package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// TestWithAbsentThings checks the lookups a Create batch answers from one
// query: names without a thing or core registration are NotFound from
// memory (what another context writes meanwhile is not seen), names with
// one are read from the database, and a name written with the context is
// read from the database again, in a deferred transaction too.
func TestWithAbsentThings(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_000_123).UTC()
	db := newTestDB(t)
	reg := db.Registry()
	if err := reg.CreateThing(ctx, testThing("made")); err != nil {
		t.Fatal(err)
	}
	if err := reg.MarkCoreRegistered(ctx, "registered", now); err != nil {
		t.Fatal(err)
	}
	actx := db.WithAbsentThings(ctx, []string{"made", "registered", "new", "later", "in-tx"})
	found := func(name string, err error, want bool) {
		t.Helper()
		switch {
		case err == nil && !want:
			t.Errorf("%s found, want NotFound", name)
		case err != nil && (want || !errkind.Is(err, errkind.NotFound)):
			t.Errorf("%s: %v, want found %v", name, err, want)
		}
	}
	_, err := reg.GetThing(actx, "made")
	found("thing made", err, true)
	_, err = reg.GetCoreDevice(actx, "registered")
	found("core device registered", err, true)
	_, err = reg.GetThing(actx, "new")
	found("thing new", err, false)
	_, err = reg.GetCoreDevice(actx, "new")
	found("core device new", err, false)

	// Made by another context: the batch's answer stays what it found.
	if err := reg.CreateThing(ctx, testThing("new")); err != nil {
		t.Fatal(err)
	}
	_, err = reg.GetThing(actx, "new")
	found("thing new, made by another context", err, false)

	// Written with the context: asked again.
	if err := reg.CreateThing(actx, testThing("later")); err != nil {
		t.Fatal(err)
	}
	_, err = reg.GetThing(actx, "later")
	found("thing later, made with the context", err, true)
	if err := reg.MarkCoreRegistered(actx, "later", now); err != nil {
		t.Fatal(err)
	}
	_, err = reg.GetCoreDevice(actx, "later")
	found("core device later, registered with the context", err, true)

	err = db.Atomically(WithDeferredInserts(actx), func(ctx context.Context) error {
		if err := reg.CreateThing(ctx, testThing("in-tx")); err != nil {
			return err
		}
		_, err := reg.GetThing(ctx, "in-tx")
		found("thing in-tx, held by the transaction", err, true)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := db.WithAbsentThings(ctx, nil); got != ctx {
		t.Error("WithAbsentThings of no names changed the context")
	}
}
