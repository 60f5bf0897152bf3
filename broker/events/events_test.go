package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

// openDB opens a migrated SQLite database in dir.
func openDB(t *testing.T, dir string) *sqlstore.DB {
	t.Helper()
	db := sqlstoretest.OpenIn(t, dir)
	return db
}

// fastConfig is a Config with test-sized timings.
func fastConfig(db *sqlstore.DB, hooks ...events.Webhook) events.Config {
	return events.Config{
		Store:          db,
		Webhooks:       hooks,
		AttemptTimeout: 300 * time.Millisecond,
		RetryMax:       2,
		RetryWaitMin:   time.Millisecond,
		RetryWaitMax:   5 * time.Millisecond,
		BackoffMin:     5 * time.Millisecond,
		BackoffMax:     20 * time.Millisecond,
		PollInterval:   50 * time.Millisecond,
		PruneInterval:  20 * time.Millisecond,
	}
}

// detail is a test payload numbered n.
func detail(n int) map[string]any {
	return map[string]any{"coreName": fmt.Sprintf("core-%d", n), "status": "success", "taskId": "t1"}
}

// publishN publishes events numbered from..to.
func publishN(svc *events.Service, from, to int) {
	for i := from; i <= to; i++ {
		svc.Publish(context.Background(), events.CoreCreated, detail(i))
	}
}

// recv takes the next event or fails after a timeout.
func recv(t *testing.T, ch <-chan events.Event) events.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed early")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return events.Event{}
}

// coreName is the coreName of an event's detail.
func coreName(t *testing.T, ev events.Event) string {
	t.Helper()
	var d struct{ CoreName string }
	if err := json.Unmarshal(ev.Detail, &d); err != nil {
		t.Fatalf("detail %s: %v", ev.Detail, err)
	}
	return d.CoreName
}

func TestEnvelope(t *testing.T) {
	db := openDB(t, t.TempDir())
	cfg := fastConfig(db)
	cfg.Now = func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("x", 3600)) }
	svc := events.New(cfg)
	svc.Publish(context.Background(), events.DeviceDeleted, map[string]any{"taskId": "t9", "deviceName": "d1", "status": "success"})

	ch, err := svc.Subscribe(t.Context(), events.FormatID(0))
	if err != nil {
		t.Fatal(err)
	}
	ev := recv(t, ch)
	body, err := ev.Envelope()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"0000000000000001","source":"com.aws.cdf.greengrass2-provisioning","detail-type":"Device Deleted Event","time":"2026-03-04T04:06:07.891Z","detail":{"deviceName":"d1","status":"success","taskId":"t9"}}`
	if string(body) != want {
		t.Errorf("envelope\n got %s\nwant %s", body, want)
	}
	if seq, err := events.ParseID(ev.ID()); err != nil || seq != 1 {
		t.Errorf("ParseID(%q) = %d, %v", ev.ID(), seq, err)
	}
}

func TestSubscribeResume(t *testing.T) {
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	publishN(svc, 1, 5)

	ctx1, cancel1 := context.WithCancel(t.Context())
	ch, err := svc.Subscribe(ctx1, events.FormatID(0))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch)
	second := recv(t, ch)
	cancel1()

	ch, err = svc.Subscribe(t.Context(), second.ID())
	if err != nil {
		t.Fatal(err)
	}
	for i := 3; i <= 5; i++ {
		if got := coreName(t, recv(t, ch)); got != fmt.Sprintf("core-%d", i) {
			t.Fatalf("replayed %s, want core-%d", got, i)
		}
	}
	publishN(svc, 6, 6)
	if got := coreName(t, recv(t, ch)); got != "core-6" {
		t.Fatalf("live event %s, want core-6", got)
	}
}

func TestSubscribeLiveOnlyWithoutID(t *testing.T) {
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	publishN(svc, 1, 3)
	ch, err := svc.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	publishN(svc, 4, 4)
	if got := coreName(t, recv(t, ch)); got != "core-4" {
		t.Fatalf("first event %s, want core-4 (no replay without an id)", got)
	}
}

func TestSubscribeIDs(t *testing.T) {
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	publishN(svc, 1, 2)

	_, err := svc.Subscribe(t.Context(), "not-a-number")
	if !errkind.Is(err, errkind.Invalid) {
		t.Errorf("Subscribe(garbage) err = %v, want Invalid", err)
	}
	// An id beyond the newest (a reset database) replays everything.
	ch, err := svc.Subscribe(t.Context(), events.FormatID(99))
	if err != nil {
		t.Fatal(err)
	}
	if got := coreName(t, recv(t, ch)); got != "core-1" {
		t.Errorf("first replayed %s, want core-1", got)
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	db := openDB(t, t.TempDir())
	cfg := fastConfig(db)
	cfg.SubscriberBuffer = 2
	svc := events.New(cfg)
	slow, err := svc.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		publishN(svc, 1, 20)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}

	// The slow subscriber got a gap-free prefix, then its channel closed.
	var last events.Event
	n := 0
	for ev := range slow {
		n++
		if want := fmt.Sprintf("core-%d", n); coreName(t, ev) != want {
			t.Fatalf("event %d is %s, want %s", n, coreName(t, ev), want)
		}
		last = ev
	}
	if n == 0 || n >= 20 {
		t.Fatalf("slow subscriber got %d events, want it dropped after a prefix", n)
	}
	// Reconnecting with the last id it got loses nothing.
	ch, err := svc.Subscribe(t.Context(), last.ID())
	if err != nil {
		t.Fatal(err)
	}
	for i := n + 1; i <= 20; i++ {
		if got := coreName(t, recv(t, ch)); got != fmt.Sprintf("core-%d", i) {
			t.Fatalf("after reconnect got %s, want core-%d", got, i)
		}
	}
}

func TestRunEndClosesSubscriptions(t *testing.T) {
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(ctx) }()
	ch, err := svc.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("got an event, want the channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription still open after Run ended")
	}
	if _, err := svc.Subscribe(t.Context(), ""); !errkind.Is(err, errkind.Unavailable) {
		t.Errorf("Subscribe after shutdown err = %v, want Unavailable", err)
	}
	// Publishing still stores events.
	publishN(svc, 1, 1)
	if seq, _ := db.LatestEventSeq(t.Context()); seq != 1 {
		t.Errorf("latest seq = %d, want 1", seq)
	}
}

func TestPublishNeverPanics(t *testing.T) {
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	svc.Publish(context.Background(), events.CoreCreated, func() {}) // not JSON-encodable: logged, dropped
	if seq, _ := db.LatestEventSeq(t.Context()); seq != 0 {
		t.Errorf("latest seq = %d, want 0 (nothing stored)", seq)
	}
	// A cancelled caller context still stores the event.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	svc.Sink()(ctx, events.CoreDeleted, detail(1))
	if seq, _ := db.LatestEventSeq(t.Context()); seq != 1 {
		t.Errorf("latest seq = %d, want 1", seq)
	}
}

// itemEvent is a keyed detail, like the task items' events (cores.CoreEvent).
type itemEvent struct {
	TaskID   string `json:"taskId"`
	CoreName string `json:"coreName"`
	Status   string `json:"status"`
}

func (e itemEvent) EventKey() string { return e.TaskID + "/" + e.CoreName }

// TestPublishKeyedOnce: a task item re-run after a crash publishes its
// event again; live subscribers and the history get it once.
func TestPublishKeyedOnce(t *testing.T) {
	db := openDB(t, t.TempDir())
	svc := events.New(fastConfig(db))
	ch, err := svc.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	svc.Publish(ctx, events.CoreCreated, itemEvent{TaskID: "t1", CoreName: "a", Status: "success"})
	svc.Publish(ctx, events.CoreCreated, itemEvent{TaskID: "t1", CoreName: "a", Status: "success"}) // the re-run
	svc.Publish(ctx, events.CoreCreated, itemEvent{TaskID: "t1", CoreName: "b", Status: "success"})

	if got := coreName(t, recv(t, ch)); got != "a" {
		t.Fatalf("first live event %s, want a", got)
	}
	if got := coreName(t, recv(t, ch)); got != "b" {
		t.Fatalf("second live event %s, want b (a only once)", got)
	}
	stored, err := db.EventsAfter(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 {
		t.Fatalf("%d events stored, want 2: %+v", len(stored), stored)
	}
}
