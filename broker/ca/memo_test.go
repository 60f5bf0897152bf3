package ca

import (
	"context"
	"crypto/x509/pkix"
	"sync/atomic"
	"testing"

	"github.com/ggfleet/ggfleet/shared/certs"
)

// countingStore counts the record reads lookup makes.
type countingStore struct {
	*memStore
	defaults, gets atomic.Int32
}

func (c *countingStore) DefaultCA(ctx context.Context) (Record, error) {
	c.defaults.Add(1)
	return c.memStore.DefaultCA(ctx)
}

func (c *countingStore) GetCA(ctx context.Context, id string) (Record, error) {
	c.gets.Add(1)
	return c.memStore.GetCA(ctx, id)
}

func TestWithBatchLookups(t *testing.T) {
	a, mem, def := initialised(t)
	store := &countingStore{memStore: mem}
	a.store = store
	ctx := context.Background()
	second, err := a.Generate(ctx, "Second", 365, certs.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	issueAll := func(ctx context.Context) {
		t.Helper()
		for i := range 3 {
			for _, caID := range []string{"", second.ID, def.ID} {
				if _, err := a.DefaultKeyAlgorithm(ctx, caID); err != nil {
					t.Fatal(err)
				}
				if _, _, err := a.Issue(ctx, caID, mustKey(t, certs.ECP256).Public(), pkix.Name{CommonName: "thing"}, 0); err != nil {
					t.Fatalf("issue %d from %q: %v", i, caID, err)
				}
			}
		}
	}
	tests := []struct {
		name                string
		ctx                 context.Context
		wantDefault, wantID int32
	}{
		{"plain context: every call reads", ctx, 6, 12},
		{"batch context: each record read once", WithBatchLookups(ctx), 1, 2},
		{"a new batch context reads again", WithBatchLookups(ctx), 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store.defaults.Store(0)
			store.gets.Store(0)
			issueAll(tc.ctx)
			if d, g := store.defaults.Load(), store.gets.Load(); d != tc.wantDefault || g != tc.wantID {
				t.Errorf("reads: %d of the default CA and %d by id, want %d and %d", d, g, tc.wantDefault, tc.wantID)
			}
		})
	}
	// A failed lookup is not remembered: the CA may exist by the next call.
	bctx := WithBatchLookups(ctx)
	if _, err := a.DefaultKeyAlgorithm(bctx, "no-such-ca"); err == nil {
		t.Fatal("an unknown CA was accepted")
	}
	store.gets.Store(0)
	_, _ = a.DefaultKeyAlgorithm(bctx, "no-such-ca")
	if g := store.gets.Load(); g != 1 {
		t.Errorf("an unknown CA was looked up %d times on the second call, want 1 (failures are not remembered)", g)
	}
}
