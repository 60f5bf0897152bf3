package sqlstore

import (
	"context"
	"sync"
)

// Lookups a Create batch answers from one query.
//
// Each core of a Create batch first asks whether its core device is
// registered and whether its thing exists: two single-row reads a core,
// on PostgreSQL two round trips. WithAbsentThings asks for the whole
// batch at once, before its transaction, and remembers the names that
// have no thing and no core registration; GetThing and GetCoreDevice then
// answer NotFound for them without a statement. A name is forgotten as
// soon as this process writes its thing or registration with the context
// (CreateThing, MarkCoreRegistered, UpdateCoreStatus), so a later lookup
// in the same batch asks the database again. What another process writes
// meanwhile is not seen, as it would not be between a lookup and the
// write that follows it: the write then fails on its unique key.

// absentKey is the context key of a batch's absent names.
type absentKey struct{}

// absentNames are the names a batch found without a row in a table.
type absentNames struct {
	db *DB
	mu sync.Mutex                 // Prepare runs in parallel with the batch context
	in map[string]map[string]bool // table → name → absent
}

// The tables WithAbsentThings asks about.
const (
	tableThings      = "registry_things"
	tableCoreDevices = "registry_core_devices"
)

// WithAbsentThings returns ctx remembering which of names have no thing
// and which no core registration, asked in one query each. On an error
// it returns ctx as it was: the lookups then ask the database.
func (d *DB) WithAbsentThings(ctx context.Context, names []string) context.Context {
	if len(names) == 0 {
		return ctx
	}
	a := &absentNames{db: d, in: map[string]map[string]bool{}}
	for _, table := range []string{tableThings, tableCoreDevices} {
		found, err := d.Registry().present(ctx, d.lookup(ctx), "look up "+table, table, names)
		if err != nil {
			return ctx
		}
		absent := make(map[string]bool, len(names))
		for _, n := range names {
			if !found[n] {
				absent[n] = true
			}
		}
		a.in[table] = absent
	}
	return context.WithValue(ctx, absentKey{}, a)
}

// absent reports whether ctx remembers name as having no row in table.
func (d *DB) absent(ctx context.Context, table, name string) bool {
	a, _ := ctx.Value(absentKey{}).(*absentNames)
	if a == nil || a.db != d {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.in[table][name]
}

// written forgets name's absence from table: it is being written with ctx.
func (d *DB) written(ctx context.Context, table, name string) {
	a, _ := ctx.Value(absentKey{}).(*absentNames)
	if a == nil || a.db != d {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.in[table], name)
}
