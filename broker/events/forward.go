package events

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Forwarder is a sink that takes events in batches through a function, such
// as EventBridge PutEvents in aws mode. Like a webhook it has a durable
// cursor (stored under Name), so delivery is at-least-once and in order
// across restarts, and a failing batch is retried with backoff, never skipped.
type Forwarder struct {
	// Name keys the cursor; it must differ from every webhook URL, for
	// example "eventbridge:default".
	Name string
	// Batch is the most events one Send gets (default 10, PutEvents' limit).
	Batch int
	// Send delivers the events, oldest first; an error retries them all.
	Send func(ctx context.Context, evs []Event) error
}

// runForwarders runs every configured forwarder until ctx ends.
func (s *Service) runForwarders(ctx context.Context, wg *sync.WaitGroup) {
	for _, f := range s.cfg.Forwarders {
		if f.Batch <= 0 {
			f.Batch = 10
		}
		wake := make(chan struct{}, 1)
		s.wakeMu.Lock()
		s.wakes = append(s.wakes, wake)
		s.wakeMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.forward(ctx, f, wake)
		}()
	}
}

// forward delivers events after f's cursor until ctx ends.
func (s *Service) forward(ctx context.Context, f Forwarder, wake <-chan struct{}) {
	d := &deliverer{s: s, hook: Webhook{URL: f.Name}, name: f.Name}
	cursor, ok := d.startCursor(ctx)
	if !ok {
		return
	}
	poll := time.NewTicker(s.cfg.PollInterval)
	defer poll.Stop()
	for {
		evs, err := s.store.EventsAfter(ctx, cursor, f.Batch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("event forwarder: read events", "forwarder", f.Name, "err", err)
			if !sleep(ctx, s.cfg.BackoffMin) {
				return
			}
			continue
		}
		if len(evs) > 0 {
			if !s.sendBatch(ctx, f, evs) {
				return
			}
			cursor = evs[len(evs)-1].Seq
			if !d.saveCursor(ctx, cursor) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-poll.C:
		}
	}
}

// sendBatch calls Send until it succeeds (true) or ctx ends (false).
func (s *Service) sendBatch(ctx context.Context, f Forwarder, evs []Event) bool {
	wait := s.cfg.BackoffMin
	for round := 1; ; round++ {
		err := safeSend(ctx, f, evs)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn("event forwarding failed; retrying the same events", "forwarder", f.Name,
			"firstEventId", evs[0].ID(), "events", len(evs), "round", round, "retryIn", wait.String(), "err", err)
		if !sleep(ctx, wait) {
			return false
		}
		wait = min2(wait*2, s.cfg.BackoffMax)
	}
}

// safeSend turns a panicking Send into an error.
func safeSend(ctx context.Context, f Forwarder, evs []Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("send panicked: %v", v)
		}
	}()
	return f.Send(ctx, evs)
}
