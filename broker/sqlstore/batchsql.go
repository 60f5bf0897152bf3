package sqlstore

import (
	"strings"
)

// Set-based statements: many rows written by one statement instead of one
// statement (one network round trip on PostgreSQL) per row. The rows come
// from a VALUES list named by a CTE, `WITH v(a, b) AS (VALUES (?, ?), …)`,
// which both SQLite (≥ 3.33 for UPDATE … FROM) and PostgreSQL accept.
// PostgreSQL types an unadorned parameter in VALUES as text, so integer
// columns take CAST(? AS BIGINT) or CAST(? AS INTEGER) in the row.

// batchRows is the most rows one statement carries: with the widest row
// (sixteen parameters, a health report) that stays far below SQLite's
// 32,766 and PostgreSQL's 65,535 parameters.
const batchRows = 500

// batchPadded is the number of VALUES rows a statement of n rows has: n
// rounded up to 1, 4, 16, 64, 256 or batchRows, the rest rows of NULLs that
// the statements skip (their key is NULL). So each statement has six texts,
// not one per batch size: pgx prepares and caches each text on each
// connection, and a prepared 500-row statement holds megabytes of
// PostgreSQL server memory.
func batchPadded(n int) int {
	size := 1
	for size < n && size*4 < batchRows {
		size *= 4
	}
	if size < n {
		return batchRows
	}
	return size
}

// valuesCTE returns `WITH v(cols) AS (VALUES row, row, …) ` for rows (see
// valuesList) and the statement's arguments.
func valuesCTE(cols, row string, rows [][]any) (string, []any) {
	list, args := valuesList(row, rows)
	return "WITH v(" + cols + ") AS (VALUES " + list + ") ", args
}

// valuesList returns `row, row, …` for rows, each rendered by the
// parameter pattern row (e.g. `(?, CAST(? AS BIGINT))`), padded by
// batchPadded with all-NULL rows (so a statement has few texts), and their
// arguments. rows must hold at most batchRows rows, each with as many
// values as row has parameters.
func valuesList(row string, rows [][]any) (string, []any) {
	width := strings.Count(row, "?")
	size := batchPadded(len(rows))
	var b strings.Builder
	args := make([]any, 0, width*size)
	for k := range size {
		if k > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
		if k < len(rows) {
			args = append(args, rows[k]...)
		} else {
			args = append(args, make([]any, width)...)
		}
	}
	return b.String(), args
}

// chunks splits n rows into [start, end) ranges of at most batchRows.
func chunks(n int) [][2]int {
	var out [][2]int
	for start := 0; start < n; start += batchRows {
		out = append(out, [2]int{start, min(start+batchRows, n)})
	}
	return out
}

// eachInList calls fn with the IN list (inList) and arguments of each
// chunk of vals, so a list of any length stays within the engines' limits
// on bound parameters (SQLite 32,766, PostgreSQL 65,535).
func eachInList(vals []string, fn func(marks string, args []any) error) error {
	for _, c := range chunks(len(vals)) {
		marks, args := inList(vals[c[0]:c[1]])
		if err := fn(marks, args); err != nil {
			return err
		}
	}
	return nil
}

// inList returns `?, ?, …` for vals padded by batchPadded with NULLs (which
// IN never matches), and its arguments, so an IN list too has six texts.
// vals must hold at most batchRows values.
func inList(vals []string) (string, []any) {
	size := batchPadded(len(vals))
	args := make([]any, size)
	for i, v := range vals {
		args[i] = v
	}
	return placeholders(size), args
}
