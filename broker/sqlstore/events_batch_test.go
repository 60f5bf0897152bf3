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
	ev := func(key string) events.Event {
		return events.Event{Source: "src", DetailType: events.CoreCreated, Time: at, Detail: []byte(`{"k":"` + key + `"}`), Key: key}
	}
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seqs, added, err := db.AppendEvents(ctx, tc.evs)
			if err != nil || fmt.Sprint(seqs) != tc.wantSeqs || fmt.Sprint(added) != tc.wantAdded {
				t.Fatalf("AppendEvents = %v %v %v; want %s %s", seqs, added, err, tc.wantSeqs, tc.wantAdded)
			}
		})
	}
	if seq, _, err := db.AppendEvent(ctx, ev("e")); err != nil || seq != 7 {
		t.Fatalf("AppendEvent after the batches = %d, %v; want 7", seq, err)
	}
	stored, err := db.EventsAfter(ctx, 0, 100)
	if err != nil || len(stored) != 7 || string(stored[1].Detail) != `{"k":"b"}` || !stored[1].Time.Equal(at) {
		t.Fatalf("stored = %+v, %v", stored, err)
	}
}
