// Package events publishes the broker's CDF events (spec §9) durably and
// delivers them to every sink: live server-sent-event subscribers (GET
// /events) and HMAC-signed webhooks. An event is first written to the
// database with a monotonic sequence number, so a subscriber that reconnects
// with Last-Event-ID and a webhook that was down both catch up from the
// stored history without losing anything (DESIGN.md, Events).
//
// Producers (cores, devices, deployments) call Publish through a plain
// func(ctx, detailType, detail) sink; Publish never blocks on a slow sink
// and never panics. Like the job queue, this package is an edge: webhook
// delivery speaks HTTP, so it imports net/http; it never imports database/sql.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/groupcommit"
)

// The CDF detail-types (spec §9). DeploymentTask Deleted Event is declared by
// CDF but never emitted, so it has no constant.
const (
	CoreCreated           = "Core Created Event"
	CoreDeleted           = "Core Deleted Event"
	CoreTemplateUpdated   = "Core Template Updated Event"
	DeviceCreated         = "Device Created Event"
	DeviceDeleted         = "Device Deleted Event"
	DeploymentTaskCreated = "DeploymentTask Created Event"
)

// DefaultSource is the CDF event source (CDF_SERVICE_EVENTBRIDGE_SOURCE's default).
const DefaultSource = "com.aws.cdf.greengrass2-provisioning"

// Event is one stored event. Its wire form (MarshalJSON) is the
// EventBridge-shaped envelope {"id","source","detail-type","time","detail"}.
type Event struct {
	Seq        int64           // monotonic sequence number assigned by the Store
	Source     string          // envelope "source"
	DetailType string          // envelope "detail-type"
	Time       time.Time       // when it was published (millisecond precision, UTC)
	Detail     json.RawMessage // envelope "detail": the JSON payload
	// Key, when set, names what the event is about (for a task item: its
	// task id and item name): the Store keeps at most one event per
	// DetailType and Key. It is not part of the wire form.
	Key string
}

// Keyed is implemented by event details that must be published once per
// occurrence even when their producer runs again: the task items that emit
// them are re-run after a crash or on another replica (issue #8). EventKey
// names the occurrence, unique per detail-type; a second Publish with the
// same detail-type and key stores and delivers nothing. "" means unkeyed.
type Keyed interface {
	EventKey() string
}

// ID is the envelope id: the sequence number, zero-padded so ids sort as
// strings too. ParseID reverses it.
func (e Event) ID() string { return FormatID(e.Seq) }

// FormatID is the envelope id of sequence number seq.
func FormatID(seq int64) string { return fmt.Sprintf("%016d", seq) }

// ParseID returns the sequence number of an envelope id ("" is 0: no event
// seen yet). Ids that this broker did not make are errkind.Invalid.
func ParseID(id string) (int64, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return 0, nil
	}
	seq, err := strconv.ParseInt(id, 10, 64)
	if err != nil || seq < 0 {
		return 0, errkind.New(errkind.Invalid, "event id %q is not an id of this broker's events (a decimal sequence number): reconnect without Last-Event-ID to receive live events", id)
	}
	return seq, nil
}

// envelope is the wire form of an event.
type envelope struct {
	ID         string          `json:"id"`
	Source     string          `json:"source"`
	DetailType string          `json:"detail-type"`
	Time       string          `json:"time"`
	Detail     json.RawMessage `json:"detail"`
}

// timeLayout is RFC 3339 with milliseconds, always UTC ("Z").
const timeLayout = "2006-01-02T15:04:05.000Z"

// MarshalJSON writes the envelope, so json.Marshal(event) is what every sink sends.
func (e Event) MarshalJSON() ([]byte, error) {
	detail := e.Detail
	if len(detail) == 0 {
		detail = json.RawMessage("null")
	}
	return json.Marshal(envelope{
		ID:         e.ID(),
		Source:     e.Source,
		DetailType: e.DetailType,
		Time:       e.Time.UTC().Format(timeLayout),
		Detail:     detail,
	})
}

// Envelope is the compact JSON envelope of the event (no newlines, so it
// fits one SSE data line).
func (e Event) Envelope() ([]byte, error) { return json.Marshal(e) }

// Store keeps events and webhook cursors durably; sqlstore.DB implements it.
type Store interface {
	// AppendEvent stores e (its Seq is ignored) under the next sequence
	// number and returns that number with added true. Numbers only grow,
	// even after pruning. When e.Key is set and an event with the same
	// DetailType and Key is stored already, it stores nothing and returns
	// that event's number with added false.
	AppendEvent(ctx context.Context, e Event) (seq int64, added bool, err error)
	// EventsAfter returns up to limit events with Seq > after, oldest first.
	EventsAfter(ctx context.Context, after int64, limit int) ([]Event, error)
	// LatestEventSeq returns the last sequence number assigned (0 if none).
	LatestEventSeq(ctx context.Context) (int64, error)
	// WebhookCursor returns the last sequence number delivered to url, and
	// false when url has no cursor yet.
	WebhookCursor(ctx context.Context, url string) (int64, bool, error)
	// SetWebhookCursor records that every event up to seq was delivered to url.
	SetWebhookCursor(ctx context.Context, url string, seq int64) error
	// PruneEvents deletes the events with Seq <= upTo that are not among
	// the newest keep, and returns how many it deleted.
	PruneEvents(ctx context.Context, keep int, upTo int64) (int64, error)
}

// Webhook is one webhook sink: the envelope is POSTed to URL, signed with Secret.
type Webhook struct {
	URL    string
	Secret []byte
}

// Config configures a Service. Zero values take the defaults noted.
type Config struct {
	Store        Store
	Source       string // default DefaultSource
	Webhooks     []Webhook
	Logger       *slog.Logger
	Now          func() time.Time // default time.Now
	HistoryLimit int              // events kept for Last-Event-ID replay; default 10,000

	// HTTPClient sends webhook requests (tests); default: a client with
	// AttemptTimeout that does not follow redirects.
	HTTPClient *http.Client
	// AttemptTimeout bounds one webhook request; default 10 s.
	AttemptTimeout time.Duration
	// RetryMax is how many quick retries one delivery round makes; default 4.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the quick retries' backoff;
	// defaults 1 s and 30 s.
	RetryWaitMin, RetryWaitMax time.Duration
	// BackoffMin and BackoffMax bound the wait between delivery rounds for
	// an event that keeps failing (it is retried forever, never skipped);
	// defaults 5 s and 5 min.
	BackoffMin, BackoffMax time.Duration
	// PollInterval is how often a webhook deliverer looks for events without
	// being woken; default 30 s.
	PollInterval time.Duration
	// PruneInterval is how often old events are pruned; default 10 min.
	PruneInterval time.Duration
	// SubscriberBuffer is each SSE subscriber's queue length; a subscriber
	// that falls further behind is dropped and must reconnect; default 256.
	SubscriberBuffer int
	// Forwarders are batch sinks with durable cursors (EventBridge).
	Forwarders []Forwarder
}

// Service publishes events and delivers them to the sinks.
type Service struct {
	cfg   Config
	store Store
	log   *slog.Logger

	// mu serialises append+fan-out, so live subscribers see events in
	// sequence order, and guards subs and closed.
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool

	wakeMu sync.Mutex
	wakes  []chan struct{} // one per running webhook deliverer

	// group stores concurrent Publish calls' events in one transaction
	// (group commit); nil unless the Store is a BatchStore.
	group *groupcommit.Group[Event, appended]
}

// New builds the service.
func New(cfg Config) *Service {
	if cfg.Source == "" {
		cfg.Source = DefaultSource
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HistoryLimit <= 0 {
		cfg.HistoryLimit = 10_000
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.RetryMax < 0 {
		cfg.RetryMax = 0
	} else if cfg.RetryMax == 0 {
		cfg.RetryMax = 4
	}
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = time.Second
	}
	if cfg.RetryWaitMax <= 0 {
		cfg.RetryWaitMax = 30 * time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 5 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = 10 * time.Minute
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = 256
	}
	s := &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger, subs: map[*subscriber]struct{}{}}
	if bs, ok := cfg.Store.(BatchStore); ok {
		s.group = groupcommit.New(func(ctx context.Context, evs []Event) ([]appended, error) {
			return s.appendGroup(ctx, bs, evs)
		}, maxGroup)
	}
	return s
}

// writeTimeout bounds one attempt to store an event. It starts once the
// publisher holds the append lock: waiting behind other publishers (a task's
// many items finishing at once, on a busy database) must not use it up.
const writeTimeout = 10 * time.Second

// writeAttempts is how many times Publish tries to store an event.
const writeAttempts = 3

// unavailableBudget is how long Publish keeps trying while the database is
// unavailable (errkind.Unavailable: PostgreSQL restarting, disk full), with
// backoff up to maxWriteWait: an outage of a minute or two must not lose
// the events of the work that finished just before it.
const (
	unavailableBudget = 2 * time.Minute
	maxWriteWait      = 5 * time.Second
)

// Publish stores the event and hands it to every sink. It matches the sink
// type producers take (cores.EventSink and friends). It returns once the
// event is stored: live subscribers get it through a non-blocking queue and
// webhook deliverers are only woken, so a slow sink never slows the caller.
// A storage failure is retried briefly, then logged; Publish never panics.
// A detail that implements Keyed is published once per key: publishing it
// again (its task item re-run) changes nothing. When the Store is a
// BatchStore, concurrent Publish calls (a thousand agents' reports) are
// stored by group commit: one transaction, one commit, for up to maxGroup
// events, each caller still returning only once its own event is
// committed.
func (s *Service) Publish(ctx context.Context, detailType string, detail any) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("publish event: panic", "detailType", detailType, "panic", fmt.Sprint(v))
		}
	}()
	body, err := json.Marshal(detail)
	if err != nil {
		s.log.Error("publish event: encode detail", "detailType", detailType, "err", err)
		return
	}
	ev := Event{
		Source:     s.cfg.Source,
		DetailType: detailType,
		Time:       s.cfg.Now().UTC().Truncate(time.Millisecond),
		Detail:     body,
	}
	if k, ok := detail.(Keyed); ok {
		ev.Key = k.EventKey()
	}
	// The caller's cancellation (a task ending) must not lose the event.
	wctx := context.WithoutCancel(ctx)

	if s.group != nil {
		// Stored (and fanned out) together with the events of the
		// concurrent Publish calls, once its transaction is committed.
		a, err := s.group.Put(wctx, ev)
		if err == nil {
			if !a.added {
				s.log.Debug("publish event: already published; not sent again", "detailType", detailType, "key", ev.Key, "seq", a.seq)
			}
			return
		}
		// The batch's transaction failed: store this event alone, with the
		// single path's retries (its key keeps a keyed event once).
		s.log.Warn("publish event: storing it with others failed; storing it alone", "detailType", detailType, "err", err)
	}

	s.mu.Lock()
	seq, added, err := s.append(wctx, ev)
	if err != nil {
		s.mu.Unlock()
		s.log.Error("publish event: could not store it; the event is lost", "detailType", detailType, "detail", string(body), "err", err)
		return
	}
	if !added {
		s.mu.Unlock()
		s.log.Debug("publish event: already published; not sent again", "detailType", detailType, "key", ev.Key, "seq", seq)
		return
	}
	ev.Seq = seq
	s.fanOutLocked(ev)
	s.mu.Unlock()
	s.wakeDeliverers()
}

// Sink returns Publish as a plain function value, for the Events fields of
// the producers' configs.
func (s *Service) Sink() func(ctx context.Context, detailType string, detail any) {
	return s.Publish
}

// append stores ev, trying writeAttempts times, or for unavailableBudget
// while the database is unavailable; added is false when ev's key was
// stored already.
func (s *Service) append(ctx context.Context, ev Event) (seq int64, added bool, err error) {
	wait := 50 * time.Millisecond
	start := time.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, writeTimeout)
		seq, added, err = s.store.AppendEvent(actx, ev)
		cancel()
		if err == nil {
			return seq, added, nil
		}
		down := errkind.Is(err, errkind.Unavailable) && time.Since(start) < unavailableBudget
		if attempt >= writeAttempts && !down {
			break
		}
		s.log.Warn("publish event: store failed, retrying", "detailType", ev.DetailType, "attempt", attempt, "err", err)
		if !sleep(ctx, wait) {
			break
		}
		wait = min(wait*4, maxWriteWait)
	}
	return 0, false, fmt.Errorf("store %s: %w", ev.DetailType, err)
}

// wakeDeliverers tells every webhook deliverer there is news, without blocking.
func (s *Service) wakeDeliverers() {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	for _, w := range s.wakes {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Close ends every live subscription (their channels close) and refuses
// new ones, so streaming HTTP handlers return and the server can shut down.
// Run calls it when its context ends. Publishing still works.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for sub := range s.subs {
		delete(s.subs, sub)
		close(sub.live)
	}
}

// sleep waits d or until ctx ends; it reports whether the full wait elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
