package events

import (
	"context"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// replayPage is how many stored events a replay reads at a time.
const replayPage = 500

// subscriber is one live SSE subscription's queue.
type subscriber struct {
	live chan Event // filled by Publish without blocking; closed when dropped
}

// Subscribe streams events to one subscriber: first the stored events after
// lastEventID (none when it is empty: live only), then live ones, in
// sequence order without gaps or duplicates. The channel closes when ctx
// ends, when the service closes, or when the subscriber falls more than
// SubscriberBuffer events behind; the subscriber then reconnects with the
// id of the last event it got and loses nothing that is still in history.
// An id that is not this broker's is errkind.Invalid; an id beyond the
// newest event (a reset database) replays the whole history.
func (s *Service) Subscribe(ctx context.Context, lastEventID string) (<-chan Event, error) {
	after, err := ParseID(lastEventID)
	if err != nil {
		return nil, err
	}
	replay := lastEventID != ""
	if replay {
		latest, err := s.store.LatestEventSeq(ctx)
		if err != nil {
			return nil, errkind.Wrap(errkind.Unavailable, err, "read the event history")
		}
		if after > latest {
			after = 0
		}
	}

	sub := &subscriber{live: make(chan Event, s.cfg.SubscriberBuffer)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errkind.New(errkind.Unavailable, "the broker is shutting down: reconnect to another instance or retry shortly")
	}
	s.subs[sub] = struct{}{}
	if !replay {
		// Live only: everything stored so far is history the client did
		// not ask for. Publish holds mu while storing, so nothing slips in
		// between reading the latest number and registering.
		latest, err := s.store.LatestEventSeq(ctx)
		if err != nil {
			delete(s.subs, sub)
			s.mu.Unlock()
			return nil, errkind.Wrap(errkind.Unavailable, err, "read the event history")
		}
		after = latest
	}
	s.mu.Unlock()

	out := make(chan Event, s.cfg.SubscriberBuffer)
	go s.pump(ctx, sub, after, replay, out)
	return out, nil
}

// pump feeds out: the stored history after `after` (when replaying), then
// the live queue, skipping what the replay already sent.
func (s *Service) pump(ctx context.Context, sub *subscriber, after int64, replay bool, out chan<- Event) {
	defer close(out)
	defer s.unsubscribe(sub)
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	last := after
	for replay {
		evs, err := s.store.EventsAfter(ctx, last, replayPage)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("event subscription: read history failed; closing it so the client reconnects", "err", err)
			}
			return
		}
		for _, ev := range evs {
			if !send(ev) {
				return
			}
			last = ev.Seq
		}
		if len(evs) < replayPage {
			break
		}
	}
	for {
		select {
		case ev, ok := <-sub.live:
			if !ok {
				return
			}
			if ev.Seq <= last {
				continue
			}
			if !send(ev) {
				return
			}
			last = ev.Seq
		case <-ctx.Done():
			return
		}
	}
}

// fanOutLocked queues ev for every live subscriber; one whose queue is full
// is dropped (its queue closes). The caller holds s.mu.
func (s *Service) fanOutLocked(ev Event) {
	for sub := range s.subs {
		select {
		case sub.live <- ev:
		default:
			delete(s.subs, sub)
			close(sub.live)
			s.log.Warn("event subscriber fell behind and was dropped; it resumes by reconnecting with Last-Event-ID", "eventId", ev.ID())
		}
	}
}

// unsubscribe removes sub if it is still registered.
func (s *Service) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		close(sub.live)
	}
}
