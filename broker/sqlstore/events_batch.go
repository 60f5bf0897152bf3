package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/events"
)

var _ events.BatchStore = (*DB)(nil)

// AppendEvents stores many events, of any types, in one transaction, each
// as AppendEvent would (events.BatchStore: a deployment batch's events, or
// the events of concurrent Publish calls stored by group commit): the counter row is locked first, so the key
// look-ups see every committed event, and an event whose (DetailType, Key)
// is stored already, or came earlier in evs, is not stored again (added
// false, its stored number returned). One commit instead of one per event.
func (d *DB) AppendEvents(ctx context.Context, evs []events.Event) ([]int64, []bool, error) {
	seqs := make([]int64, len(evs))
	added := make([]bool, len(evs))
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		clear(added)
		if _, err := tx.ExecContext(ctx, d.q(`UPDATE event_sequence SET last_seq = last_seq WHERE id = 1`)); err != nil {
			return mapErr(err, "lock event sequence")
		}
		var last int64
		if err := tx.QueryRowContext(ctx, d.q(`SELECT last_seq FROM event_sequence WHERE id = 1`)).Scan(&last); err != nil {
			return mapErr(err, "read event sequence")
		}
		for i, e := range evs {
			if e.Key != "" {
				var seq int64
				err := tx.QueryRowContext(ctx, d.q(`SELECT seq FROM events WHERE detail_type = ? AND event_key = ?`), e.DetailType, e.Key).Scan(&seq)
				if err == nil {
					seqs[i] = seq
					continue
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return mapErr(err, fmt.Sprintf("look up event %s %q", e.DetailType, e.Key))
				}
			}
			last++
			detail := string(e.Detail)
			if detail == "" {
				detail = "null"
			}
			var key any
			if e.Key != "" {
				key = e.Key
			}
			if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO events (seq, source, detail_type, created_at, detail, event_key) VALUES (?, ?, ?, ?, ?, ?)`),
				last, e.Source, e.DetailType, millis(e.Time), detail, key); err != nil {
				return mapErr(err, fmt.Sprintf("insert event %d", last))
			}
			seqs[i], added[i] = last, true
		}
		_, err := tx.ExecContext(ctx, d.q(`UPDATE event_sequence SET last_seq = ? WHERE id = 1`), last)
		return mapErr(err, "advance event sequence")
	})
	if err != nil {
		return nil, nil, err
	}
	return seqs, added, nil
}
