package ca

import (
	"context"
	"sync"
)

// WithBatchLookups returns a context in which the Authority reads each CA
// record, and which CA is the default, at most once. Work that issues a batch
// of certificates together (a core task's batch) uses it so that each
// certificate does not read the same rows again. Keep such a context short
// lived: a CA made default while it lasts is not seen by it.
func WithBatchLookups(ctx context.Context) context.Context {
	return context.WithValue(ctx, memoKey{}, &lookupMemo{recs: map[string]Record{}})
}

type memoKey struct{}

// lookupMemo holds the records read under one WithBatchLookups context; its
// certificates may be issued concurrently.
type lookupMemo struct {
	mu   sync.Mutex
	recs map[string]Record // by the caID asked for ("" = the default)
}

func memoOf(ctx context.Context) *lookupMemo {
	m, _ := ctx.Value(memoKey{}).(*lookupMemo)
	return m
}

func (m *lookupMemo) get(caID string) (Record, bool) {
	if m == nil {
		return Record{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[caID]
	return rec, ok
}

func (m *lookupMemo) put(caID string, rec Record) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[caID] = rec
}
