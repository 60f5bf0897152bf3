package sqlstore

import (
	"context"
	"fmt"
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
