package sqlstore

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/events"
)

func TestEventsAppendListPrune(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()

	if seq, err := db.LatestEventSeq(ctx); err != nil || seq != 0 {
		t.Fatalf("LatestEventSeq on empty = %d, %v; want 0", seq, err)
	}
	for i := 1; i <= 5; i++ {
		seq, added, err := db.AppendEvent(ctx, events.Event{Source: "src", DetailType: events.CoreCreated, Time: at, Detail: json.RawMessage(`{"coreName":"c"}`)})
		if err != nil || !added {
			t.Fatal(err)
		}
		if seq != int64(i) {
			t.Fatalf("AppendEvent #%d got seq %d", i, seq)
		}
	}
	got, err := db.EventsAfter(ctx, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 4 {
		t.Fatalf("EventsAfter(2, 2) = %+v, want seqs 3, 4", got)
	}
	e := got[0]
	if e.Source != "src" || e.DetailType != events.CoreCreated || !e.Time.Equal(at) || string(e.Detail) != `{"coreName":"c"}` {
		t.Errorf("stored event = %+v", e)
	}

	// Keep the newest 2, but never beyond upTo.
	if n, err := db.PruneEvents(ctx, 2, 1); err != nil || n != 1 {
		t.Fatalf("PruneEvents(keep 2, upTo 1) = %d, %v; want 1", n, err)
	}
	if n, err := db.PruneEvents(ctx, 2, 5); err != nil || n != 2 {
		t.Fatalf("PruneEvents(keep 2, upTo 5) = %d, %v; want 2", n, err)
	}
	if got, _ := db.EventsAfter(ctx, 0, 10); len(got) != 2 || got[0].Seq != 4 {
		t.Fatalf("after pruning: %+v, want seqs 4, 5", got)
	}
	if n, err := db.PruneEvents(ctx, 0, 5); err != nil || n != 2 {
		t.Fatalf("PruneEvents(keep 0, upTo 5) = %d, %v; want 2", n, err)
	}
	// Numbers never go back, even with no events left.
	seq, _, err := db.AppendEvent(ctx, events.Event{Source: "src", DetailType: events.CoreDeleted, Time: at})
	if err != nil || seq != 6 {
		t.Fatalf("AppendEvent after pruning all = %d, %v; want 6", seq, err)
	}
	if got, _ := db.EventsAfter(ctx, 5, 10); len(got) != 1 || string(got[0].Detail) != "null" {
		t.Fatalf("event without detail: %+v, want detail null", got)
	}
}

func TestWebhookCursor(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	const url = "https://example.com/hook?token=x"
	if _, ok, err := db.WebhookCursor(ctx, url); err != nil || ok {
		t.Fatalf("WebhookCursor of a new URL: ok=%v err=%v, want none", ok, err)
	}
	for _, seq := range []int64{0, 7, 9} {
		if err := db.SetWebhookCursor(ctx, url, seq); err != nil {
			t.Fatal(err)
		}
		got, ok, err := db.WebhookCursor(ctx, url)
		if err != nil || !ok || got != seq {
			t.Fatalf("WebhookCursor = %d, %v, %v; want %d", got, ok, err, seq)
		}
	}
	if _, ok, _ := db.WebhookCursor(ctx, "https://other.example/"); ok {
		t.Error("cursors are per URL")
	}
}

// TestEventsKeyedOnce is issue #8's "no duplicate event": a task item re-run
// after a crash publishes its event again with the same key, and the store
// keeps the first one only, without using up a sequence number.
func TestEventsKeyedOnce(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	created := func(key, detail string) events.Event {
		return events.Event{Source: "src", DetailType: events.CoreCreated, Time: at, Key: key, Detail: json.RawMessage(detail)}
	}
	tests := []struct {
		name      string
		ev        events.Event
		wantSeq   int64
		wantAdded bool
	}{
		{"first run", created("task-1/core-a", `{"coreName":"core-a","status":"success"}`), 1, true},
		{"re-run of the item", created("task-1/core-a", `{"coreName":"core-a","status":"success"}`), 1, false},
		{"re-run with another outcome", created("task-1/core-a", `{"coreName":"core-a","status":"failed"}`), 1, false},
		{"another item", created("task-1/core-b", `{"coreName":"core-b"}`), 2, true},
		{"same core in another task", created("task-2/core-a", `{"coreName":"core-a"}`), 3, true},
		{"same key, other detail-type", events.Event{Source: "src", DetailType: events.CoreDeleted, Time: at, Key: "task-1/core-a"}, 4, true},
		{"unkeyed", created("", `{"coreName":"core-a"}`), 5, true},
		{"unkeyed again", created("", `{"coreName":"core-a"}`), 6, true},
	}
	for _, tt := range tests {
		seq, added, err := db.AppendEvent(ctx, tt.ev)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if seq != tt.wantSeq || added != tt.wantAdded {
			t.Errorf("%s: AppendEvent = %d, added %v; want %d, added %v", tt.name, seq, added, tt.wantSeq, tt.wantAdded)
		}
	}
	got, err := db.EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 || string(got[0].Detail) != `{"coreName":"core-a","status":"success"}` {
		t.Fatalf("stored events %+v, want 6 with the first run's detail first", got)
	}
	if seq, err := db.LatestEventSeq(ctx); err != nil || seq != 6 {
		t.Fatalf("LatestEventSeq = %d, %v; want 6 (duplicates take no number)", seq, err)
	}
}

// TestEventsKeyedOnceConcurrently publishes one item's event from many
// goroutines at once (two replicas re-running the same batch): one stores
// it, the others are told it exists.
func TestEventsKeyedOnceConcurrently(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	const n = 8
	type result struct {
		seq   int64
		added bool
		err   error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			seq, added, err := db.AppendEvent(ctx, events.Event{Source: "src", DetailType: events.CoreCreated,
				Time: time.Now(), Key: "task-1/core-a", Detail: json.RawMessage(`{"coreName":"core-a"}`)})
			results <- result{seq, added, err}
		}()
	}
	added := 0
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.seq != 1 {
			t.Errorf("AppendEvent returned seq %d, want 1 (the one stored event)", r.seq)
		}
		if r.added {
			added++
		}
	}
	if added != 1 {
		t.Fatalf("%d appends stored the event, want 1", added)
	}
	if got, err := db.EventsAfter(ctx, 0, 100); err != nil || len(got) != 1 {
		t.Fatalf("stored events %+v, %v; want 1", got, err)
	}
}
