package events_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// receiver is a webhook endpoint that records what it acknowledged.
type receiver struct {
	t      *testing.T
	secret []byte
	// status decides the answer to the n-th request (1-based); nil: 200.
	status func(n int) int

	mu       sync.Mutex
	requests int
	acked    []string // envelope ids answered 2xx, in order
	names    []string // coreNames answered 2xx, in order
	bad      []string // problems seen in requests
}

func newReceiver(t *testing.T, status func(n int) int) (*receiver, *httptest.Server) {
	t.Helper()
	rc := &receiver{t: t, secret: testSecret, status: status}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	n := rc.requests
	ts := r.Header.Get(events.HeaderTimestamp)
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		rc.bad = append(rc.bad, "timestamp "+ts)
	}
	if !events.Verify(rc.secret, ts, body, r.Header.Get(events.HeaderSignature)) {
		rc.bad = append(rc.bad, "bad signature on request "+strconv.Itoa(n))
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" || r.Method != http.MethodPost {
		rc.bad = append(rc.bad, r.Method+" "+ct)
	}
	var env struct {
		ID         string `json:"id"`
		DetailType string `json:"detail-type"`
		Detail     struct{ CoreName string }
	}
	if err := json.Unmarshal(body, &env); err != nil || env.ID != r.Header.Get(events.HeaderEventID) {
		rc.bad = append(rc.bad, "envelope "+string(body))
	}
	status := http.StatusOK
	if rc.status != nil {
		status = rc.status(n)
	}
	if status >= 200 && status < 300 {
		rc.acked = append(rc.acked, env.ID)
		rc.names = append(rc.names, env.Detail.CoreName)
	}
	w.WriteHeader(status)
}

// snapshot returns the acknowledged coreNames and any problems.
func (rc *receiver) snapshot() (names, bad []string, requests int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.names...), append([]string(nil), rc.bad...), rc.requests
}

// waitAcked waits until rc acknowledged n events, then checks they are
// core-from..core-(from+n-1), in order, once each, correctly signed.
func (rc *receiver) waitAcked(from, n int) {
	rc.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, bad, _ := rc.snapshot()
		if len(bad) > 0 {
			rc.t.Fatalf("receiver saw bad requests: %v", bad)
		}
		if len(names) >= n {
			if len(names) > n {
				rc.t.Fatalf("receiver acknowledged %d events, want %d: %v", len(names), n, names)
			}
			for i, got := range names {
				if want := "core-" + strconv.Itoa(from+i); got != want {
					rc.t.Fatalf("acknowledged #%d is %s, want %s (all: %v)", i+1, got, want, names)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			rc.t.Fatalf("receiver acknowledged %d of %d events: %v", len(names), n, names)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run starts svc.Run and waits until every webhook has a cursor, so events
// published afterwards are all owed to them. Its stop function cancels Run
// and waits for it to return.
func run(t *testing.T, svc *events.Service, db *sqlstore.DB, hooks ...events.Webhook) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	for _, h := range hooks {
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, ok, err := db.WebhookCursor(context.Background(), h.URL); err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("webhook %s got no cursor", h.URL)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return stop
}

func TestWebhookDeliversInOrderSigned(t *testing.T) {
	db := openDB(t, t.TempDir())
	rc, srv := newReceiver(t, nil)
	hook := events.Webhook{URL: srv.URL + "/hook", Secret: testSecret}
	svc := events.New(fastConfig(db, hook))
	run(t, svc, db, hook)
	publishN(svc, 1, 12)
	rc.waitAcked(1, 12)
	time.Sleep(100 * time.Millisecond) // nothing more arrives
	rc.waitAcked(1, 12)
}

func TestWebhookRetriesUntilSuccess(t *testing.T) {
	db := openDB(t, t.TempDir())
	// Fail the first 9 requests (several rounds of quick retries), then a
	// 400 (not retried by the quick retries), then succeed.
	rc, srv := newReceiver(t, func(n int) int {
		switch {
		case n < 10:
			return http.StatusInternalServerError
		case n == 10:
			return http.StatusBadRequest
		}
		return http.StatusNoContent
	})
	hook := events.Webhook{URL: srv.URL, Secret: testSecret}
	svc := events.New(fastConfig(db, hook))
	run(t, svc, db, hook)
	publishN(svc, 1, 5)
	rc.waitAcked(1, 5)
	if _, _, requests := rc.snapshot(); requests != 15 {
		t.Errorf("receiver got %d requests, want 10 failures + 5 deliveries", requests)
	}
}

func TestHangingWebhookBlocksNothing(t *testing.T) {
	db := openDB(t, t.TempDir())
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	failing, failSrv := newReceiver(t, func(int) int { return http.StatusServiceUnavailable })
	good, goodSrv := newReceiver(t, nil)
	hooks := []events.Webhook{
		{URL: hang.URL, Secret: testSecret},
		{URL: failSrv.URL, Secret: testSecret},
		{URL: goodSrv.URL, Secret: testSecret},
	}
	svc := events.New(fastConfig(db, hooks...))
	run(t, svc, db, hooks...)
	sub, err := svc.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	publishN(svc, 1, 10)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("publishing 10 events took %v with a hanging webhook", d)
	}
	for i := 1; i <= 10; i++ {
		if got := coreName(t, recv(t, sub)); got != "core-"+strconv.Itoa(i) {
			t.Fatalf("SSE got %s, want core-%d", got, i)
		}
	}
	good.waitAcked(1, 10)
	if names, _, _ := failing.snapshot(); len(names) != 0 {
		t.Errorf("failing webhook acknowledged %v", names)
	}
	// The failing and hanging webhooks are still on their first event.
	for _, h := range hooks[:2] {
		if cur, _, _ := db.WebhookCursor(t.Context(), h.URL); cur != 0 {
			t.Errorf("cursor of %s = %d, want 0", h.URL, cur)
		}
	}
}

func TestWebhookResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	rc, srv := newReceiver(t, nil)
	hook := events.Webhook{URL: srv.URL, Secret: testSecret}

	svc := events.New(fastConfig(db, hook))
	stop := run(t, svc, db, hook)
	publishN(svc, 1, 3)
	rc.waitAcked(1, 3)
	stop()

	// Published while no deliverer runs (the broker down or busy starting).
	publishN(svc, 4, 5)

	svc2 := events.New(fastConfig(db, hook))
	run(t, svc2, db, hook)
	publishN(svc2, 6, 7)
	rc.waitAcked(1, 7)
}

func TestPruneKeepsUndelivered(t *testing.T) {
	db := openDB(t, t.TempDir())
	_, srv := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	hook := events.Webhook{URL: srv.URL, Secret: testSecret}
	cfg := fastConfig(db, hook)
	cfg.HistoryLimit = 3
	svc := events.New(cfg)
	publishN(svc, 1, 10)
	if err := db.SetWebhookCursor(t.Context(), hook.URL, 4); err != nil {
		t.Fatal(err)
	}
	run(t, svc, db, hook)
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs, err := db.EventsAfter(t.Context(), 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 && evs[0].Seq == 5 {
			break // 1..4 delivered and pruned; 5..10 kept for the webhook
		}
		if len(evs) > 0 && evs[0].Seq > 5 {
			t.Fatalf("pruned an undelivered event: oldest is %d", evs[0].Seq)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not pruned: oldest is %d", evs[0].Seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPruneWithoutWebhooks(t *testing.T) {
	db := openDB(t, t.TempDir())
	cfg := fastConfig(db)
	cfg.HistoryLimit = 3
	svc := events.New(cfg)
	publishN(svc, 1, 10)
	run(t, svc, db)
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs, _ := db.EventsAfter(t.Context(), 0, 100)
		if len(evs) == 3 && evs[0].Seq == 8 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("history not pruned to 3: %d events", len(evs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunRejectsBadWebhooks(t *testing.T) {
	db := openDB(t, t.TempDir())
	tests := []struct {
		name  string
		hooks []events.Webhook
		want  string
	}{
		{"relative URL", []events.Webhook{{URL: "/hook", Secret: testSecret}}, "absolute"},
		{"ftp", []events.Webhook{{URL: "ftp://h/x", Secret: testSecret}}, "absolute"},
		{"twice", []events.Webhook{{URL: "http://h/x", Secret: testSecret}, {URL: "http://h/x", Secret: testSecret}}, "twice"},
		{"short secret", []events.Webhook{{URL: "http://h/x", Secret: []byte("short")}}, "--webhook-secret-file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := events.New(fastConfig(db, tc.hooks...)).Run(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":"1"}`)
	sig := events.Sign(testSecret, "1700000000", body)
	// Independently computed: printf '1700000000.{"id":"1"}' | openssl dgst -sha256 -hmac '0123456789abcdef-test-secret'
	const want = "sha256=1293752fa416b6d16dc0a2b206da4c52fd31b3e89bf7d12c5836b0f24cfaf1f7"
	if sig != want {
		t.Fatalf("Sign = %q, want %q", sig, want)
	}
	tests := []struct {
		name   string
		secret []byte
		ts     string
		body   []byte
		sig    string
		ok     bool
	}{
		{"valid", testSecret, "1700000000", body, sig, true},
		{"other body", testSecret, "1700000000", []byte(`{"id":"2"}`), sig, false},
		{"other timestamp", testSecret, "1700000001", body, sig, false},
		{"other secret", []byte("another-secret-of-16"), "1700000000", body, sig, false},
		{"empty signature", testSecret, "1700000000", body, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := events.Verify(tc.secret, tc.ts, tc.body, tc.sig); got != tc.ok {
				t.Errorf("Verify = %v, want %v", got, tc.ok)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		want    string
		wantErr string
	}{
		{"trimmed", write("ok", "  0123456789abcdef0123\n"), "0123456789abcdef0123", ""},
		{"missing", filepath.Join(dir, "nope"), "", "read webhook secret file"},
		{"empty", write("empty", " \n"), "", "is empty"},
		{"short", write("short", "abc\n"), "", "at least 16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := events.LoadSecret(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("LoadSecret = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestStartWebhooksBeforeDelivery: a replica that publishes before the
// delivering replica (the leader) runs still owes a new webhook those
// events once StartWebhooks made its cursor at startup; a known webhook's
// cursor is left alone.
func TestStartWebhooksBeforeDelivery(t *testing.T) {
	db := openDB(t, t.TempDir())
	rc, srv := newReceiver(t, nil)
	hook := events.Webhook{URL: srv.URL + "/hook", Secret: testSecret}
	svc := events.New(fastConfig(db, hook))
	publishN(svc, 1, 2) // before the webhook was configured: not owed
	if err := svc.StartWebhooks(context.Background()); err != nil {
		t.Fatal(err)
	}
	publishN(svc, 3, 5) // published while no replica delivers yet
	// Another replica starting leaves the cursor alone.
	if err := svc.StartWebhooks(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cur, ok, err := db.WebhookCursor(context.Background(), hook.URL); err != nil || !ok || cur != 2 {
		t.Fatalf("cursor = %d, %v, %v; want 2", cur, ok, err)
	}
	run(t, svc, db, hook)
	rc.waitAcked(3, 3)
}
