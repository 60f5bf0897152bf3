package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ggfleet/ggfleet/broker/events"
)

// EventStream is what GET /events needs: a subscription to the broker's
// events that first replays the history after lastEventID ("" for live
// only). The channel closes when the subscriber falls behind or the broker
// shuts down; the client then reconnects with Last-Event-ID. events.Service
// implements it.
type EventStream interface {
	Subscribe(ctx context.Context, lastEventID string) (<-chan events.Event, error)
}

// sseHeartbeat is how often an idle stream gets a comment line, so proxies
// and clients see the connection is alive.
var sseHeartbeat = 15 * time.Second

// events streams the events as server-sent events (DESIGN.md, Events):
// "id: <id>", "event: <detail-type>", "data: <envelope>" frames, resuming
// after the Last-Event-ID header (or the lastEventId query parameter, for
// clients that cannot set headers).
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	if a.d.Events == nil {
		writeMessage(w, r, http.StatusServiceUnavailable, "events are not available on this broker")
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("lastEventId")
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ch, err := a.d.Events.Subscribe(ctx, lastID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}

	rc := http.NewResponseController(w)
	// The stream outlives any server write timeout.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // ask reverse proxies not to buffer
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		a.log.Warn("events stream: this connection cannot stream", "err", err)
		return
	}

	beat := time.NewTicker(sseHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
		case ev, ok := <-ch:
			if !ok {
				return
			}
			data, err := ev.Envelope()
			if err != nil {
				a.log.Error("events stream: encode event", "eventId", ev.ID(), "err", err)
				return
			}
			if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID(), ev.DetailType, data); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
