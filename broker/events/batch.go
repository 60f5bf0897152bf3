package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// BatchStore is implemented by stores that append many events in one
// transaction (sqlstore.DB). Each event is stored under a Store.AppendEvent
// contract; the result says, per event, its number and whether it was added.
type BatchStore interface {
	AppendEvents(ctx context.Context, evs []Event) (seqs []int64, added []bool, err error)
}

// PublishAll is Publish for many details of one type, stored in one
// transaction when the store is a BatchStore: a deployment batch's 50
// events cost one commit (one fsync on PostgreSQL) instead of 50, all
// taken under the one lock that orders events. On a storage error it falls
// back to Publish per detail (with its retries); keyed details are stored
// once either way.
func (s *Service) PublishAll(ctx context.Context, detailType string, details []any) {
	bs, ok := s.store.(BatchStore)
	if !ok || len(details) < 2 {
		for _, d := range details {
			s.Publish(ctx, detailType, d)
		}
		return
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("publish events: panic", "detailType", detailType, "panic", fmt.Sprint(v))
		}
	}()
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	evs := make([]Event, 0, len(details))
	for _, d := range details {
		body, err := json.Marshal(d)
		if err != nil {
			s.log.Error("publish event: encode detail", "detailType", detailType, "err", err)
			continue
		}
		ev := Event{Source: s.cfg.Source, DetailType: detailType, Time: now, Detail: body}
		if k, ok := d.(Keyed); ok {
			ev.Key = k.EventKey()
		}
		evs = append(evs, ev)
	}
	// The caller's cancellation (a task ending) must not lose the events.
	wctx := context.WithoutCancel(ctx)
	actx, cancel := context.WithTimeout(wctx, writeTimeout)
	s.mu.Lock()
	seqs, added, err := bs.AppendEvents(actx, evs)
	cancel()
	if err != nil {
		s.mu.Unlock()
		s.log.Warn("publish events: storing them together failed; storing them one by one", "detailType", detailType, "count", len(evs), "err", err)
		for _, d := range details {
			s.Publish(wctx, detailType, d)
		}
		return
	}
	for i := range evs {
		if added[i] {
			evs[i].Seq = seqs[i]
			s.fanOutLocked(evs[i])
		}
	}
	s.mu.Unlock()
	s.wakeDeliverers()
}
