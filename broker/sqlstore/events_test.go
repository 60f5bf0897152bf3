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
		seq, err := db.AppendEvent(ctx, events.Event{Source: "src", DetailType: events.CoreCreated, Time: at, Detail: json.RawMessage(`{"coreName":"c"}`)})
		if err != nil {
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
	seq, err := db.AppendEvent(ctx, events.Event{Source: "src", DetailType: events.CoreDeleted, Time: at})
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
