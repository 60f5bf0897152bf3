package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Webhook request headers (DESIGN.md, Events).
const (
	HeaderEventID   = "X-Ggfleet-Event-Id"
	HeaderTimestamp = "X-Ggfleet-Timestamp"
	HeaderSignature = "X-Ggfleet-Signature"
)

// MinSecretLen is the shortest webhook secret accepted.
const MinSecretLen = 16

// deliverPage is how many stored events a deliverer reads at a time.
const deliverPage = 100

// Sign returns the X-Ggfleet-Signature value of a webhook request:
// "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body).
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is a valid X-Ggfleet-Signature for
// timestamp and body, in constant time. Receivers should also reject
// timestamps too far from their clock (replays).
func Verify(secret []byte, timestamp string, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, timestamp, body)), []byte(strings.TrimSpace(signature)))
}

// LoadSecret reads a webhook secret file (--webhook-secret-file): the
// file's content with surrounding whitespace trimmed, at least MinSecretLen bytes.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read webhook secret file: %w", err)
	}
	secret := bytes.TrimSpace(b)
	if len(secret) == 0 {
		return nil, fmt.Errorf("webhook secret file %s is empty: write a random secret of at least %d bytes into it (for example: openssl rand -hex 32)", path, MinSecretLen)
	}
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("webhook secret in %s is %d bytes: use at least %d (for example: openssl rand -hex 32)", path, len(secret), MinSecretLen)
	}
	return secret, nil
}

// ValidateWebhooks checks webhook sinks before use: absolute http(s) URLs,
// each configured once, each with a secret of at least MinSecretLen bytes.
func ValidateWebhooks(hooks []Webhook) error {
	seen := map[string]bool{}
	for _, h := range hooks {
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("webhook URL %q: use an absolute http:// or https:// URL", redact(h.URL))
		}
		if seen[h.URL] {
			return fmt.Errorf("webhook URL %q is given twice: give each webhook once", redact(h.URL))
		}
		seen[h.URL] = true
		if len(h.Secret) < MinSecretLen {
			return fmt.Errorf("webhook %q has no secret of at least %d bytes: give one with --webhook-secret-file", redact(h.URL), MinSecretLen)
		}
	}
	return nil
}

// redact drops a URL's credentials, query and fragment for logs and
// messages: webhook URLs often carry tokens.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// Run delivers events to the webhooks until ctx ends, and prunes old
// history. Call it once, for the broker's lifetime, even without webhooks:
// when ctx ends it also closes the live subscriptions (Close), so SSE
// streams end and the HTTP server can shut down. A webhook seen for the
// first time starts after the newest stored event; after that its cursor
// is kept in the database, so restarts resume where delivery stopped.
func (s *Service) Run(ctx context.Context) error {
	defer s.Close()
	return s.Deliver(ctx)
}

// Deliver is Run without the closing of live subscriptions: the leader-only
// part (webhook and forwarder delivery, pruning), which a replica may start
// and stop several times as it gains and loses the leadership. Whoever
// calls it calls Close once at shutdown.
func (s *Service) Deliver(ctx context.Context) error {
	if err := ValidateWebhooks(s.cfg.Webhooks); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, h := range s.cfg.Webhooks {
		d := s.newDeliverer(h)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.run(ctx)
		}()
	}
	s.runForwarders(ctx, &wg)
	s.pruneLoop(ctx)
	wg.Wait()
	return nil
}

// pruneLoop prunes history every PruneInterval until ctx ends.
func (s *Service) pruneLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		s.prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prune deletes events beyond HistoryLimit that every webhook has been sent.
func (s *Service) prune(ctx context.Context) {
	upTo, err := s.store.LatestEventSeq(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("prune events: read latest", "err", err)
		}
		return
	}
	for _, h := range s.cfg.Webhooks {
		cur, ok, err := s.store.WebhookCursor(ctx, h.URL)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("prune events: read webhook cursor", "webhook", redact(h.URL), "err", err)
			}
			return
		}
		if ok && cur < upTo {
			upTo = cur
		}
		// A webhook without a cursor yet starts after the newest event,
		// so it holds nothing back.
	}
	n, err := s.store.PruneEvents(ctx, s.cfg.HistoryLimit, upTo)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("prune events", "err", err)
		}
		return
	}
	if n > 0 {
		s.log.Info("pruned old events", "deleted", n)
	}
}

// deliverer sends the events to one webhook, in order, at least once.
type deliverer struct {
	s      *Service
	hook   Webhook
	name   string // redacted URL for logs
	client *retryablehttp.Client
	wake   chan struct{}
}

func (s *Service) newDeliverer(h Webhook) *deliverer {
	hc := s.cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{
			Timeout: s.cfg.AttemptTimeout,
			// A redirected POST would lose its body or its meaning:
			// count a redirect as a failed delivery.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	d := &deliverer{s: s, hook: h, name: redact(h.URL), wake: make(chan struct{}, 1)}
	c := retryablehttp.NewClient()
	c.HTTPClient = hc
	c.Logger = nil
	c.RetryMax = s.cfg.RetryMax
	c.RetryWaitMin = s.cfg.RetryWaitMin
	c.RetryWaitMax = s.cfg.RetryWaitMax
	c.Backoff = func(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
		// Honour Retry-After, but never beyond RetryWaitMax.
		return min2(retryablehttp.DefaultBackoff(min, max, attempt, resp), max)
	}
	// Each attempt carries a fresh timestamp and signature, so receivers'
	// replay windows stay valid across retries.
	// The header map is cloned: the previous attempt's transport may still
	// be reading it.
	c.PrepareRetry = func(req *http.Request) error {
		body, _ := req.Context().Value(bodyKey{}).([]byte)
		req.Header = req.Header.Clone()
		d.sign(req.Header, body)
		return nil
	}
	// Give up a round with the last response or error, not a wrapped one.
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	d.client = c
	s.wakeMu.Lock()
	s.wakes = append(s.wakes, d.wake)
	s.wakeMu.Unlock()
	return d
}

// bodyKey carries a request's body to PrepareRetry, which re-signs it.
type bodyKey struct{}

func min2(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// sign sets the timestamp and signature headers for body.
func (d *deliverer) sign(h http.Header, body []byte) {
	ts := strconv.FormatInt(d.s.cfg.Now().Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, Sign(d.hook.Secret, ts, body))
}

// run delivers until ctx ends.
func (d *deliverer) run(ctx context.Context) {
	cursor, ok := d.startCursor(ctx)
	if !ok {
		return
	}
	poll := time.NewTicker(d.s.cfg.PollInterval)
	defer poll.Stop()
	for {
		evs, err := d.s.store.EventsAfter(ctx, cursor, deliverPage)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.s.log.Warn("webhook: read events", "webhook", d.name, "err", err)
			if !sleep(ctx, d.s.cfg.BackoffMin) {
				return
			}
			continue
		}
		for _, ev := range evs {
			if !d.deliver(ctx, ev) {
				return
			}
			cursor = ev.Seq
			if !d.saveCursor(ctx, cursor) {
				return
			}
		}
		if len(evs) == deliverPage {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-poll.C:
		}
	}
}

// startCursor reads (or, for a new webhook, creates) the durable cursor.
func (d *deliverer) startCursor(ctx context.Context) (int64, bool) {
	for {
		cur, ok, err := d.s.store.WebhookCursor(ctx, d.hook.URL)
		if err == nil && ok {
			return cur, true
		}
		if err == nil {
			cur, err = d.s.store.LatestEventSeq(ctx)
			if err == nil {
				err = d.s.store.SetWebhookCursor(ctx, d.hook.URL, cur)
			}
			if err == nil {
				d.s.log.Info("webhook: new; delivering events from now on", "webhook", d.name, "after", FormatID(cur))
				return cur, true
			}
		}
		if ctx.Err() != nil {
			return 0, false
		}
		d.s.log.Warn("webhook: read cursor", "webhook", d.name, "err", err)
		if !sleep(ctx, d.s.cfg.BackoffMin) {
			return 0, false
		}
	}
}

// saveCursor records delivery up to seq, retrying until it is stored or ctx ends.
func (d *deliverer) saveCursor(ctx context.Context, seq int64) bool {
	for {
		err := d.s.store.SetWebhookCursor(ctx, d.hook.URL, seq)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.s.log.Warn("webhook: save cursor", "webhook", d.name, "err", err)
		if !sleep(ctx, d.s.cfg.BackoffMin) {
			return false
		}
	}
}

// deliver sends ev until the webhook answers 2xx (true) or ctx ends (false).
// Between rounds of quick retries it waits with capped exponential backoff:
// an event is never skipped, so later events wait behind it.
func (d *deliverer) deliver(ctx context.Context, ev Event) bool {
	body, err := ev.Envelope()
	if err != nil {
		// Stored details are JSON we encoded; this cannot recur on retry.
		d.s.log.Error("webhook: encode event; skipping it", "webhook", d.name, "eventId", ev.ID(), "err", err)
		return true
	}
	wait := d.s.cfg.BackoffMin
	for round := 1; ; round++ {
		err := d.post(ctx, ev, body)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.s.log.Warn("webhook delivery failed; retrying the same event", "webhook", d.name, "eventId", ev.ID(), "round", round, "retryIn", wait.String(), "err", err)
		if !sleep(ctx, wait) {
			return false
		}
		wait = min2(wait*2, d.s.cfg.BackoffMax)
	}
}

// post makes one round of attempts; nil means a 2xx answer.
func (d *deliverer) post(ctx context.Context, ev Event, body []byte) error {
	ctx = context.WithValue(ctx, bodyKey{}, body)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, d.hook.URL, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ggfleet-webhook")
	req.Header.Set(HeaderEventID, ev.ID())
	d.sign(req.Header, body)
	resp, err := d.client.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry a token: do not log it
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// StartWebhooks gives every configured webhook that has no cursor yet one
// at the latest event, so it receives every event published from now on.
// Call it when the process starts, before it publishes: delivery itself
// (Run) starts later on the replica that leads it, and a new webhook's
// cursor made only then would skip the events published meanwhile.
func (s *Service) StartWebhooks(ctx context.Context) error {
	for _, h := range s.cfg.Webhooks {
		_, ok, err := s.store.WebhookCursor(ctx, h.URL)
		if err != nil {
			return fmt.Errorf("webhook cursor: %w", err)
		}
		if ok {
			continue
		}
		cur, err := s.store.LatestEventSeq(ctx)
		if err != nil {
			return fmt.Errorf("webhook cursor: %w", err)
		}
		if err := s.store.SetWebhookCursor(ctx, h.URL, cur); err != nil {
			return fmt.Errorf("webhook cursor: %w", err)
		}
		s.log.Info("webhook: new; delivering events from now on", "webhook", redact(h.URL), "after", FormatID(cur))
	}
	return nil
}
