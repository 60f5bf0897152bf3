package events_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ggfleet/ggfleet/broker/events"
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
