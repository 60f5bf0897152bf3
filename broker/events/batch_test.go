package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

// keyedDetail is a detail published once per key.
type keyedDetail struct {
	CoreName string `json:"coreName"`
}

func (k keyedDetail) EventKey() string { return "t1/" + k.CoreName }

// PublishAll stores and fans out many events in order, keyed ones once,
// interleaving correctly with Publish.
func TestPublishAll(t *testing.T) {
	cases := []struct {
		name    string
		details []any
		want    []string // coreNames received, in order
	}{
		{name: "one", details: []any{detail(1)}, want: []string{"core-1"}},
		{name: "several", details: []any{detail(2), detail(3), detail(4)}, want: []string{"core-2", "core-3", "core-4"}},
		{name: "keyed, with a repeat inside and a repeat of an earlier batch",
			details: []any{keyedDetail{"k1"}, keyedDetail{"k2"}, keyedDetail{"k1"}}, want: []string{"k1", "k2"}},
		{name: "keyed again", details: []any{keyedDetail{"k2"}, keyedDetail{"k3"}}, want: []string{"k3"}},
		{name: "none", details: nil, want: nil},
	}
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	defer svc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := svc.Subscribe(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var seq int64
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc.PublishAll(context.Background(), events.CoreCreated, tc.details)
			svc.Publish(context.Background(), events.CoreDeleted, detail(100)) // a marker after the batch
			var got []string
			for {
				ev := recv(t, ch)
				if ev.Seq <= seq {
					t.Fatalf("event %d after %d: out of order", ev.Seq, seq)
				}
				seq = ev.Seq
				if ev.DetailType == events.CoreDeleted {
					break
				}
				got = append(got, coreName(t, ev))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("received %v, want %v", got, tc.want)
			}
		})
	}
	stored, err := db.EventsAfter(context.Background(), 0, 100)
	if err != nil || len(stored) != 12 || stored[len(stored)-1].Seq != seq {
		t.Fatalf("stored %d events (last %d), %v; want 12 (7 published, 5 markers) ending at %d", len(stored), stored[len(stored)-1].Seq, err, seq)
	}
}

// countingStore counts the store's append calls; failBatch makes every
// AppendEvents fail (nothing stored), so Publish must fall back.
type countingStore struct {
	*sqlstore.DB
	failBatch        bool
	batches, singles atomic.Int64
	batched          atomic.Int64 // events in AppendEvents calls
}

func (c *countingStore) AppendEvents(ctx context.Context, evs []events.Event) ([]int64, []bool, error) {
	c.batches.Add(1)
	c.batched.Add(int64(len(evs)))
	if c.failBatch {
		return nil, nil, errors.New("database hiccup")
	}
	return c.DB.AppendEvents(ctx, evs)
}

func (c *countingStore) AppendEvent(ctx context.Context, e events.Event) (int64, bool, error) {
	c.singles.Add(1)
	return c.DB.AppendEvent(ctx, e)
}

// plainStore hides the BatchStore of the store it wraps.
type plainStore struct{ events.Store }

// TestPublishConcurrent: concurrent Publish calls of several types, with
// keyed repeats racing each other, are each stored once (keyed ones once
// per key) and committed when Publish returns; live subscribers get them
// in sequence order. With a BatchStore they go through AppendEvents
// (group commit); without one, or when the batch fails, one by one.
func TestPublishConcurrent(t *testing.T) {
	const callers, keys = 120, 10
	cases := []struct {
		name        string
		plain       bool
		failBatch   bool
		wantBatches bool // AppendEvents stores every event
		wantSingles bool // AppendEvent stores every event
	}{
		{name: "group commit", wantBatches: true},
		{name: "no batch store", plain: true, wantSingles: true},
		{name: "batch fails, stored one by one", failBatch: true, wantSingles: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t, t.TempDir())
			cs := &countingStore{DB: db, failBatch: tc.failBatch}
			cfg := fastConfig(db)
			cfg.Store = cs
			if tc.plain {
				cfg.Store = plainStore{cs}
			}
			svc := events.New(cfg)
			defer svc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := svc.Subscribe(ctx, "")
			if err != nil {
				t.Fatal(err)
			}

			var wg sync.WaitGroup
			errs := make(chan error, 2*callers)
			for i := range callers {
				wg.Go(func() {
					svc.Publish(context.Background(), events.CoreCreated, detail(i))
					if !stored(db, events.CoreCreated, fmt.Sprintf("core-%d", i)) {
						errs <- fmt.Errorf("caller %d: its event is not stored when Publish returns", i)
					}
				})
				wg.Go(func() {
					name := fmt.Sprintf("k%d", i%keys)
					svc.Publish(context.Background(), events.CoreTemplateUpdated, itemEvent{TaskID: "t1", CoreName: name, Status: "success"})
					if !stored(db, events.CoreTemplateUpdated, name) {
						errs <- fmt.Errorf("caller %d: keyed event %s not stored when Publish returns", i, name)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			const want = callers + keys
			all, err := db.EventsAfter(context.Background(), 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != want {
				t.Fatalf("%d events stored, want %d", len(all), want)
			}
			seen := map[string]int{}
			for _, ev := range all {
				seen[ev.DetailType+" "+coreName(t, ev)]++
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("%s stored %d times", k, n)
				}
			}
			var last int64
			for range want {
				ev := recv(t, ch)
				if ev.Seq <= last {
					t.Fatalf("live event %d after %d: out of order", ev.Seq, last)
				}
				last = ev.Seq
			}
			select {
			case ev := <-ch:
				t.Fatalf("extra live event %d %s", ev.Seq, ev.Detail)
			case <-time.After(50 * time.Millisecond):
			}

			batches, batched, singles := cs.batches.Load(), cs.batched.Load(), cs.singles.Load()
			t.Logf("%d AppendEvents calls (%d events), %d AppendEvent calls", batches, batched, singles)
			if tc.wantBatches && (batched != 2*callers || singles != 0) {
				t.Errorf("%d events in AppendEvents, %d AppendEvent calls; want %d and 0", batched, singles, 2*callers)
			}
			if tc.wantSingles && singles != 2*callers {
				t.Errorf("%d AppendEvent calls, want %d", singles, 2*callers)
			}
		})
	}
}

// stored reports whether an event of detailType about coreName is stored.
func stored(db *sqlstore.DB, detailType, coreName string) bool {
	all, err := db.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		return false
	}
	for _, ev := range all {
		var d struct{ CoreName string }
		if ev.DetailType == detailType && json.Unmarshal(ev.Detail, &d) == nil && d.CoreName == coreName {
			return true
		}
	}
	return false
}
