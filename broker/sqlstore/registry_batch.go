package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
)

// Registry questions about many things at once, for deployment batches
// (local.BatchStore): one query instead of one or more per core.

// RegisteredCores returns which of names have a core registration.
func (s *RegistryStore) RegisteredCores(ctx context.Context, names []string) (map[string]bool, error) {
	return s.present(ctx, s.d.w(ctx), "look up core registrations", tableCoreDevices, names)
}

// present returns which of names have a row in table (keyed by its name
// column), asked through q in a statement per chunk of names.
func (s *RegistryStore) present(ctx context.Context, q Querier, what, table string, names []string) (map[string]bool, error) {
	out := make(map[string]bool, len(names))
	err := eachInList(names, func(marks string, args []any) error {
		list, err := s.column(ctx, q, what, `SELECT name FROM `+table+` WHERE name IN (`+marks+`)`, args...)
		for _, n := range list {
			out[n] = true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MoveThingsToGroup makes every existing thing of things a member of group
// and of no other group whose name starts with prefix, in one transaction.
// It returns the things that do not exist (left alone), and
// errkind.NotFound when the group does not exist. Idempotent.
func (s *RegistryStore) MoveThingsToGroup(ctx context.Context, things []string, group, prefix string) ([]string, error) {
	var missing []string
	if len(things) == 0 {
		return nil, nil
	}
	err := s.d.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.mustExist(ctx, tx, "thing group", group, qGroupExists); err != nil {
			return err
		}
		exists, err := s.present(ctx, tx, "look up things", tableThings, things)
		if err != nil {
			return err
		}
		var present []string
		for _, n := range things {
			if exists[n] {
				present = append(present, n)
			} else {
				missing = append(missing, n)
			}
		}
		if len(present) == 0 {
			return nil
		}
		// substr rather than LIKE: '_' in the prefix would be a wildcard.
		err = eachInList(present, func(marks string, names []any) error {
			args := append([]any{len(prefix), prefix, group}, names...)
			if _, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM registry_group_members
				WHERE substr(group_name, 1, ?) = ? AND group_name <> ? AND thing_name IN (`+marks+`)`), args...); err != nil {
				return mapErr(err, fmt.Sprintf("remove %d things from other groups than %s", len(names), group))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range chunks(len(present)) {
			chunk := present[c[0]:c[1]]
			rows := make([][]any, len(chunk))
			for i, n := range chunk {
				rows[i] = []any{n}
			}
			with, args := valuesCTE(`thing_name`, `(?)`, rows)
			args = append(args, group)
			if _, err := tx.ExecContext(ctx, s.d.q(with+`INSERT INTO registry_group_members (group_name, thing_name)
				SELECT CAST(? AS TEXT), thing_name FROM v WHERE thing_name IS NOT NULL
				ON CONFLICT (group_name, thing_name) DO NOTHING`), args...); err != nil {
				return mapErr(err, fmt.Sprintf("add %d things to group %q", len(chunk), group))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return missing, nil
}
