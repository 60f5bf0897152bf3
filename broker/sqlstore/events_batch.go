package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/events"
)

var _ events.BatchStore = (*DB)(nil)

// AppendEvents stores many events, of any types, in one transaction, each
// as AppendEvent would (events.BatchStore: a deployment batch's events, or
// the events of concurrent Publish calls stored by group commit): the counter row is locked first, so the key
// look-ups see every committed event, and an event whose (DetailType, Key)
// is stored already, or came earlier in evs, is not stored again (added
// false, its stored number returned). One commit instead of one per event,
// and a few set-based statements instead of two per event, since the
// counter's lock serialises every writer of events.
func (d *DB) AppendEvents(ctx context.Context, evs []events.Event) ([]int64, []bool, error) {
	seqs := make([]int64, len(evs))
	added := make([]bool, len(evs))
	if len(evs) == 0 {
		return seqs, added, nil
	}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		clear(seqs)
		clear(added)
		var last int64
		if err := tx.QueryRowContext(ctx, d.q(`UPDATE event_sequence SET last_seq = last_seq WHERE id = 1 RETURNING last_seq`)).Scan(&last); err != nil {
			return mapErr(err, "lock event sequence")
		}
		stored, err := d.storedEventKeys(ctx, tx, evs)
		if err != nil {
			return err
		}
		var rows [][]any
		for i, e := range evs {
			k := [2]string{e.DetailType, e.Key}
			if e.Key != "" {
				if seq, ok := stored[k]; ok {
					seqs[i] = seq
					continue
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
				stored[k] = last
			}
			rows = append(rows, []any{last, e.Source, e.DetailType, millis(e.Time), detail, key})
			seqs[i], added[i] = last, true
		}
		for _, c := range chunks(len(rows)) {
			with, args := valuesCTE(`seq, source, detail_type, created_at, detail, event_key`,
				`(CAST(? AS BIGINT), ?, ?, CAST(? AS BIGINT), ?, CAST(? AS TEXT))`, rows[c[0]:c[1]])
			if _, err := tx.ExecContext(ctx, d.q(with+`INSERT INTO events (seq, source, detail_type, created_at, detail, event_key)
				SELECT seq, source, detail_type, created_at, detail, event_key FROM v WHERE seq IS NOT NULL`), args...); err != nil {
				return mapErr(err, fmt.Sprintf("insert events %d to %d", rows[c[0]][0], rows[c[1]-1][0]))
			}
		}
		if len(rows) == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, d.q(`UPDATE event_sequence SET last_seq = ? WHERE id = 1`), last)
		return mapErr(err, "advance event sequence")
	})
	if err != nil {
		return nil, nil, err
	}
	return seqs, added, nil
}

// storedEventKeys returns the numbers of the stored events that have the
// (DetailType, Key) of one of evs, by type and key: one query per type and
// chunk of keys.
func (d *DB) storedEventKeys(ctx context.Context, tx *sql.Tx, evs []events.Event) (map[[2]string]int64, error) {
	out := make(map[[2]string]int64)
	keys := make(map[string][]string) // detail type → keys, each once
	var types []string
	seen := make(map[[2]string]bool)
	for _, e := range evs {
		k := [2]string{e.DetailType, e.Key}
		if e.Key == "" || seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := keys[e.DetailType]; !ok {
			types = append(types, e.DetailType)
		}
		keys[e.DetailType] = append(keys[e.DetailType], e.Key)
	}
	for _, typ := range types {
		list := keys[typ]
		for _, c := range chunks(len(list)) {
			chunk := list[c[0]:c[1]]
			what := fmt.Sprintf("look up %d events %s", len(chunk), typ)
			query, args := d.eventKeysQuery(typ, chunk)
			rows, err := tx.QueryContext(ctx, query, args...)
			if err != nil {
				return nil, mapErr(err, what)
			}
			for rows.Next() {
				var key string
				var seq int64
				if err := rows.Scan(&key, &seq); err != nil {
					rows.Close()
					return nil, mapErr(err, what)
				}
				out[[2]string{typ, key}] = seq
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return nil, mapErr(err, what)
			}
		}
	}
	return out, nil
}

// eventKeysQuery returns the query of storedEventKeys for one type and
// chunk of keys, and its arguments. On PostgreSQL each key is looked up
// through the (detail_type, event_key) index on its own (a LATERAL
// subquery the planner cannot flatten): as `event_key IN (…)` the planner,
// with the statistics of a young table, scans every event of the type and
// filters, which took milliseconds a batch while holding the lock that
// serialises every writer of events. SQLite looks the list up in the index.
func (d *DB) eventKeysQuery(typ string, keys []string) (string, []any) {
	if d.dialect != Postgres {
		marks, args := inList(keys)
		return d.q(`SELECT event_key, seq FROM events WHERE detail_type = ? AND event_key IN (` + marks + `)`), append([]any{typ}, args...)
	}
	rows := make([][]any, len(keys))
	for i, k := range keys {
		rows[i] = []any{k}
	}
	with, args := valuesCTE(`k`, `(CAST(? AS TEXT))`, rows)
	return d.q(with + `SELECT e.event_key, e.seq FROM v CROSS JOIN LATERAL
		(SELECT event_key, seq FROM events WHERE detail_type = ? AND event_key = v.k OFFSET 0) e`), append(args, typ)
}
