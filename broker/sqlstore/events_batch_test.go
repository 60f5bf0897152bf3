package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/events"
)

func TestAppendEvents(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()
	evType := func(detailType, key string) events.Event {
		return events.Event{Source: "src", DetailType: detailType, Time: at, Detail: []byte(`{"k":"` + key + `"}`), Key: key}
	}
	ev := func(key string) events.Event { return evType(events.CoreCreated, key) }
	if _, _, err := db.AppendEvent(ctx, ev("a")); err != nil { // seq 1
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		evs       []events.Event
		wantSeqs  string
		wantAdded string
	}{
		{name: "new, unkeyed, already stored, repeated inside", evs: []events.Event{ev("b"), ev(""), ev("a"), ev("b"), ev("c")},
			wantSeqs: "[2 3 1 2 4]", wantAdded: "[true true false false true]"},
		{name: "nothing new", evs: []events.Event{ev("c")}, wantSeqs: "[4]", wantAdded: "[false]"},
		{name: "empty", evs: nil, wantSeqs: "[]", wantAdded: "[]"},
		{name: "numbers go on", evs: []events.Event{ev(""), ev("d")}, wantSeqs: "[5 6]", wantAdded: "[true true]"},
		{name: "several types: a key is per type", evs: []events.Event{evType(events.CoreDeleted, "a"), ev("a"), evType(events.CoreTemplateUpdated, ""), evType(events.CoreDeleted, "a")},
			wantSeqs: "[7 1 8 7]", wantAdded: "[true false true false]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seqs, added, err := db.AppendEvents(ctx, tc.evs)
			if err != nil || fmt.Sprint(seqs) != tc.wantSeqs || fmt.Sprint(added) != tc.wantAdded {
				t.Fatalf("AppendEvents = %v %v %v; want %s %s", seqs, added, err, tc.wantSeqs, tc.wantAdded)
			}
		})
	}
	if seq, _, err := db.AppendEvent(ctx, ev("e")); err != nil || seq != 9 {
		t.Fatalf("AppendEvent after the batches = %d, %v; want 9", seq, err)
	}
	stored, err := db.EventsAfter(ctx, 0, 100)
	if err != nil || len(stored) != 9 || string(stored[1].Detail) != `{"k":"b"}` || !stored[1].Time.Equal(at) {
		t.Fatalf("stored = %+v, %v", stored, err)
	}
}

// TestEventKeysQueryPlan checks, on PostgreSQL, that the key look-up of
// AppendEvents probes the (detail_type, event_key) index per key even with
// a plan made while the table was empty (a young database: no statistics
// yet, and pgx keeps each connection's prepared statements): in the
// `event_key IN (…)` form such a plan read every event of the type.
func TestEventKeysQueryPlan(t *testing.T) {
	if testDialect != Postgres {
		t.Skip("a PostgreSQL plan; this runs in the PostgreSQL pass")
	}
	ctx := context.Background()
	db := newTestDB(t)
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = fmt.Sprintf("task-1/core-%d", i)
	}
	query, args := db.eventKeysQuery(events.CoreCreated, keys)
	if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `PREPARE keys AS `+query); err != nil {
		t.Fatal(err)
	}
	literals := make([]string, len(args)) // EXPLAIN EXECUTE takes no bind parameters
	for i, a := range args {
		switch v := a.(type) {
		case nil:
			literals[i] = "NULL"
		case string:
			literals[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		default:
			t.Fatalf("argument %d is a %T", i, a)
		}
	}
	explain := func() string {
		t.Helper()
		rows, err := conn.QueryContext(ctx, `EXPLAIN (ANALYZE, COSTS OFF) EXECUTE keys(`+strings.Join(literals, ", ")+`)`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var plan strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(line + "\n")
		}
		return plan.String()
	}
	explain() // planned on the empty table

	at := time.UnixMilli(1_700_000_000_000).UTC()
	evs := make([]events.Event, 3000)
	for i := range evs {
		evs[i] = events.Event{Source: "src", DetailType: events.CoreCreated, Time: at, Detail: []byte(`{}`), Key: fmt.Sprintf("task-0/core-%d", i)}
	}
	if _, _, err := db.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	plan := explain()
	if !strings.Contains(plan, "Index Cond: ((detail_type = ") || !strings.Contains(plan, "AND (event_key = ") || strings.Contains(plan, "Rows Removed by Filter") {
		t.Fatalf("the key look-up does not probe the index per key:\n%s", plan)
	}
}
