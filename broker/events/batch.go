package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// BatchStore is implemented by stores that append many events, of any
// types, in one transaction (sqlstore.DB): PublishAll's details and the
// events of concurrent Publish calls (group commit). Each event is stored
// under a Store.AppendEvent contract, an event whose (DetailType, Key)
// came earlier in evs included; the result says, per event, its number and
// whether it was added. A non-nil error means none was stored.
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

// maxGroup bounds the events of concurrent Publish calls stored in one
// transaction, so that the transaction, which holds the lock that orders
// events, stays short and the writer role moves on.
const maxGroup = 256

// appended is one event's outcome in a group commit: its number, and
// whether it was added (false: its key was stored already).
type appended struct {
	seq   int64
	added bool
}

// appendGroup is the group commit's write: it stores evs (the events of
// concurrent Publish calls, of any types) in one AppendEvents transaction
// under writeTimeout, and fans out the added ones in order, all under mu
// so that live subscribers see events in sequence order. ctx does not end
// with any one caller's.
func (s *Service) appendGroup(ctx context.Context, bs BatchStore, evs []Event) ([]appended, error) {
	s.mu.Lock()
	fanned := false
	defer func() {
		s.mu.Unlock()
		if fanned {
			s.wakeDeliverers()
		}
	}()
	actx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	seqs, added, err := bs.AppendEvents(actx, evs)
	if err != nil {
		return nil, fmt.Errorf("store %d events together: %w", len(evs), err)
	}
	if len(seqs) != len(evs) || len(added) != len(evs) {
		return nil, fmt.Errorf("store %d events together: the store returned %d numbers", len(evs), len(seqs))
	}
	out := make([]appended, len(evs))
	for i := range evs {
		out[i] = appended{seq: seqs[i], added: added[i]}
		if added[i] {
			ev := evs[i]
			ev.Seq = seqs[i]
			s.fanOutLocked(ev)
			fanned = true
		}
	}
	return out, nil
}
