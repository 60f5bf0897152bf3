package ca

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// memStore is an in-memory Store with the same contract as sqlstore's.
type memStore struct {
	mu   sync.Mutex
	recs map[string]Record
}

func newMemStore() *memStore { return &memStore{recs: map[string]Record{}} }

func (m *memStore) InsertCA(ctx context.Context, rec Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.recs[rec.ID]; ok {
		return errkind.New(errkind.Conflict, "certificate authority %s: already exists", rec.ID)
	}
	rec.Default = false
	m.recs[rec.ID] = rec
	return nil
}

func (m *memStore) CreateDefaultCA(ctx context.Context, rec Record) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.recs {
		if r.Default {
			return r, false, nil
		}
	}
	rec.Default = true
	m.recs[rec.ID] = rec
	return rec, true, nil
}

func (m *memStore) GetCA(ctx context.Context, id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return Record{}, errkind.New(errkind.NotFound, "certificate authority %s: not found", id)
	}
	return r, nil
}

func (m *memStore) DefaultCA(ctx context.Context) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.recs {
		if r.Default {
			return r, nil
		}
	}
	return Record{}, errkind.New(errkind.NotFound, "default certificate authority: not found")
}

func (m *memStore) ListCAs(ctx context.Context) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for _, r := range m.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if a.Default != b.Default {
			if a.Default {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Subject, b.Subject), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}
