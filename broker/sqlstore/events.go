package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/events"
)

// The DB is the event store.
var _ events.Store = (*DB)(nil)

// errDuplicateEvent rolls back an append whose key is already stored.
var errDuplicateEvent = errors.New("event already stored")

// AppendEvent stores e under the next sequence number (events.Store). The
// counter row is updated first in the same transaction, which serialises
// writers on both engines, so the look-up of e.Key that follows sees every
// committed event: an event whose (DetailType, Key) is stored already is
// not stored again, and its sequence number is returned with added false
// (the unique index events_detail_type_key backs this up).
func (d *DB) AppendEvent(ctx context.Context, e events.Event) (int64, bool, error) {
	var seq int64
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`UPDATE event_sequence SET last_seq = last_seq + 1 WHERE id = 1`)); err != nil {
			return mapErr(err, "advance event sequence")
		}
		if e.Key != "" {
			err := tx.QueryRowContext(ctx, d.q(`SELECT seq FROM events WHERE detail_type = ? AND event_key = ?`), e.DetailType, e.Key).Scan(&seq)
			if err == nil {
				return errDuplicateEvent
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return mapErr(err, fmt.Sprintf("look up event %s %q", e.DetailType, e.Key))
			}
		}
		if err := tx.QueryRowContext(ctx, d.q(`SELECT last_seq FROM event_sequence WHERE id = 1`)).Scan(&seq); err != nil {
			return mapErr(err, "read event sequence")
		}
		detail := string(e.Detail)
		if detail == "" {
			detail = "null"
		}
		var key any
		if e.Key != "" {
			key = e.Key
		}
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO events (seq, source, detail_type, created_at, detail, event_key) VALUES (?, ?, ?, ?, ?, ?)`),
			seq, e.Source, e.DetailType, millis(e.Time), detail, key)
		return mapErr(err, fmt.Sprintf("insert event %d", seq))
	})
	switch {
	case errors.Is(err, errDuplicateEvent):
		return seq, false, nil
	case errkind.Is(err, errkind.Conflict) && e.Key != "":
		// Only the key can collide (seq is taken under the counter's lock).
		var existing int64
		if qerr := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT seq FROM events WHERE detail_type = ? AND event_key = ?`), e.DetailType, e.Key).Scan(&existing); qerr != nil {
			return 0, false, err
		}
		return existing, false, nil
	case err != nil:
		return 0, false, err
	}
	return seq, true, nil
}

// EventsAfter returns up to limit events with seq > after, oldest first (events.Store).
func (d *DB) EventsAfter(ctx context.Context, after int64, limit int) ([]events.Event, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT seq, source, detail_type, created_at, detail FROM events WHERE seq > ? ORDER BY seq LIMIT ?`), after, limit)
	if err != nil {
		return nil, mapErr(err, "list events")
	}
	defer rows.Close()
	var out []events.Event
	for rows.Next() {
		var (
			e      events.Event
			at     int64
			detail string
		)
		if err := rows.Scan(&e.Seq, &e.Source, &e.DetailType, &at, &detail); err != nil {
			return nil, mapErr(err, "read event")
		}
		e.Time = fromMillis(at)
		e.Detail = []byte(detail)
		out = append(out, e)
	}
	return out, mapErr(rows.Err(), "list events")
}

// LatestEventSeq returns the last sequence number assigned (events.Store).
func (d *DB) LatestEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT last_seq FROM event_sequence WHERE id = 1`)).Scan(&seq)
	return seq, mapErr(err, "read event sequence")
}

// WebhookCursor returns the last sequence number delivered to url
// (events.Store); ok is false when url has none yet.
func (d *DB) WebhookCursor(ctx context.Context, url string) (int64, bool, error) {
	var seq int64
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT seq FROM webhook_cursors WHERE url = ?`), url).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, mapErr(err, "read webhook cursor")
	}
	return seq, true, nil
}

// SetWebhookCursor records delivery to url up to seq (events.Store).
func (d *DB) SetWebhookCursor(ctx context.Context, url string, seq int64) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO webhook_cursors (url, seq, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (url) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at`),
		url, seq, time.Now().UnixMilli())
	return mapErr(err, "save webhook cursor")
}

// PruneEvents deletes events with seq <= upTo that are not among the newest
// keep, returning how many it deleted (events.Store).
func (d *DB) PruneEvents(ctx context.Context, keep int, upTo int64) (int64, error) {
	latest, err := d.LatestEventSeq(ctx)
	if err != nil {
		return 0, err
	}
	cut := min(upTo, latest-int64(keep))
	if cut <= 0 {
		return 0, nil
	}
	res, err := d.w(ctx).ExecContext(ctx, d.q(`DELETE FROM events WHERE seq <= ?`), cut)
	if err != nil {
		return 0, mapErr(err, "prune events")
	}
	n, err := res.RowsAffected()
	return n, mapErr(err, "prune events")
}
