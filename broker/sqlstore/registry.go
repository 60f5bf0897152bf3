package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
)

// RegistryStore is the local provider's registry (local.Store): things,
// certificates, policies, thing groups, core registrations and client-device
// associations. It is a separate type so its method names cannot collide
// with the other stores on *DB.
type RegistryStore struct{ d *DB }

// Registry returns the registry store backed by this database.
func (d *DB) Registry() *RegistryStore { return &RegistryStore{d: d} }

// exists reports whether a row matches; query selects one column.
func (s *RegistryStore) exists(ctx context.Context, q Querier, query string, args ...any) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, s.d.q(query), args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// mustExist returns errkind.NotFound with a clear message when the row is missing.
func (s *RegistryStore) mustExist(ctx context.Context, q Querier, what, name, query string) error {
	ok, err := s.exists(ctx, q, query, name)
	if err != nil {
		return mapErr(err, "look up "+what)
	}
	if !ok {
		return errkind.New(errkind.NotFound, "%s %q does not exist", what, name)
	}
	return nil
}

const (
	qThingExists  = `SELECT 1 FROM registry_things WHERE name = ?`
	qCertExists   = `SELECT 1 FROM registry_certificates WHERE id = ?`
	qPolicyExists = `SELECT 1 FROM registry_policies WHERE name = ?`
	qGroupExists  = `SELECT 1 FROM registry_thing_groups WHERE name = ?`
)

// column runs a query returning one text column and sorts the result.
func (s *RegistryStore) column(ctx context.Context, q Querier, what, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, mapErr(err, what)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, mapErr(err, what)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, what)
	}
	sort.Strings(out)
	return out, nil
}

// The registry's inserts that a Create batch's transaction may defer
// (deferred.go).
var (
	insertThing       = newInsert("registry_things", []string{"name", "thing_type", "attributes", "created_at"}, 0, false, "")
	insertCertificate = newInsert("registry_certificates", []string{"id", "pem", "ca_id", "status", "created_at"}, 1, false,
		"ON CONFLICT (id) DO NOTHING")
	insertPrincipal = newInsert("registry_thing_principals", []string{"thing_name", "cert_id"}, 2, false,
		"ON CONFLICT (thing_name, cert_id) DO NOTHING")
	insertPolicyAttachment = newInsert("registry_policy_attachments", []string{"policy_name", "cert_id"}, 2, false,
		"ON CONFLICT (policy_name, cert_id) DO NOTHING")
	insertGroup = newInsert("registry_thing_groups", []string{"name", "description", "created_at"}, 1, false,
		"ON CONFLICT (name) DO NOTHING")
	insertGroupMember = newInsert("registry_group_members", []string{"thing_name", "group_name"}, 2, false,
		"ON CONFLICT (group_name, thing_name) DO NOTHING")
)

// CreateThing inserts a thing; errkind.Conflict if it exists (reported by
// the transaction's commit instead when it defers inserts).
func (s *RegistryStore) CreateThing(ctx context.Context, t provider.Thing) error {
	attrs := t.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	doc, err := json.Marshal(attrs)
	if err != nil {
		return fmt.Errorf("encode attributes of thing %q: %w", t.Name, err)
	}
	s.d.written(ctx, tableThings, t.Name)
	err = s.d.insert(ctx, &insertThing, t.Name, t.ThingType, string(doc), millis(t.CreatedAt))
	if err != nil {
		err = mapErr(err, "create thing")
		if errkind.Is(err, errkind.Conflict) {
			return errkind.Wrap(errkind.Conflict, err, "thing %q already exists", t.Name)
		}
		return err
	}
	return nil
}

// GetThing returns a thing with its groups, principals and policies.
func (s *RegistryStore) GetThing(ctx context.Context, name string) (provider.Thing, error) {
	t := provider.Thing{Name: name}
	if s.d.absent(ctx, tableThings, name) {
		return t, errkind.New(errkind.NotFound, "thing %q does not exist", name)
	}
	var attrs string
	var created int64
	err := s.d.readKey(ctx, s.d.lookup(ctx), tableThings, name).QueryRowContext(ctx, s.d.q(`SELECT thing_type, attributes, created_at FROM registry_things WHERE name = ?`), name).
		Scan(&t.ThingType, &attrs, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, errkind.New(errkind.NotFound, "thing %q does not exist", name)
	}
	if err != nil {
		return t, mapErr(err, "read thing")
	}
	t.CreatedAt = fromMillis(created)
	t.Attributes = map[string]string{}
	if err := json.Unmarshal([]byte(attrs), &t.Attributes); err != nil {
		return t, fmt.Errorf("decode attributes of thing %q: %w", name, err)
	}
	if t.Groups, err = s.column(ctx, s.d.lookup(ctx), "read thing groups",
		`SELECT group_name FROM registry_group_members WHERE thing_name = ?`, name); err != nil {
		return t, err
	}
	if t.Principals, err = s.column(ctx, s.d.lookup(ctx), "read thing principals",
		`SELECT cert_id FROM registry_thing_principals WHERE thing_name = ?`, name); err != nil {
		return t, err
	}
	// The policies of each principal (a thing has one, as a rule), each
	// found through the cert_id index: as one join, PostgreSQL planned on
	// a young table scanned every attachment (a millisecond a thing at
	// 10,000 things).
	t.Policies = []string{}
	for _, certID := range t.Principals {
		policies, err := s.column(ctx, s.d.lookup(ctx), "read thing policies",
			`SELECT policy_name FROM registry_policy_attachments WHERE cert_id = ?`, certID)
		if err != nil {
			return t, err
		}
		t.Policies = append(t.Policies, policies...)
	}
	sort.Strings(t.Policies)
	t.Policies = slices.Compact(t.Policies)
	return t, nil
}

// DeleteThing removes the thing with its memberships, principals, the
// certificates no other thing uses (and their policy attachments) and the
// associations where it is a client device, in one transaction.
func (s *RegistryStore) DeleteThing(ctx context.Context, name string) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		certIDs, err := s.column(ctx, tx, "read thing principals",
			`SELECT cert_id FROM registry_thing_principals WHERE thing_name = ?`, name)
		if err != nil {
			return err
		}
		stmts := []string{
			`DELETE FROM registry_group_members WHERE thing_name = ?`,
			`DELETE FROM registry_thing_principals WHERE thing_name = ?`,
			`DELETE FROM registry_client_devices WHERE device_name = ?`,
			`DELETE FROM registry_things WHERE name = ?`,
		}
		for _, st := range stmts {
			if _, err := tx.ExecContext(ctx, s.d.q(st), name); err != nil {
				return mapErr(err, "delete thing")
			}
		}
		for _, id := range certIDs {
			used, err := s.exists(ctx, tx, `SELECT 1 FROM registry_thing_principals WHERE cert_id = ?`, id)
			if err != nil {
				return mapErr(err, "check certificate use")
			}
			if used {
				continue
			}
			for _, st := range []string{
				`DELETE FROM registry_policy_attachments WHERE cert_id = ?`,
				`DELETE FROM registry_certificates WHERE id = ?`,
			} {
				if _, err := tx.ExecContext(ctx, s.d.q(st), id); err != nil {
					return mapErr(err, "delete certificate")
				}
			}
		}
		return nil
	})
}

// DeleteCertificate deletes a certificate that no thing uses, with its
// policy attachments; errkind.Conflict while a thing uses it.
func (s *RegistryStore) DeleteCertificate(ctx context.Context, id string) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		used, err := s.exists(ctx, tx, `SELECT 1 FROM registry_thing_principals WHERE cert_id = ?`, id)
		if err != nil {
			return mapErr(err, "check certificate use")
		}
		if used {
			return errkind.New(errkind.Conflict, "certificate %s is attached to a thing: detach it first", id)
		}
		for _, st := range []string{
			`DELETE FROM registry_policy_attachments WHERE cert_id = ?`,
			`DELETE FROM registry_certificates WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, s.d.q(st), id); err != nil {
				return mapErr(err, "delete certificate")
			}
		}
		return nil
	})
}

// DeletePolicy deletes a policy attached to no certificate;
// errkind.Conflict while attached.
func (s *RegistryStore) DeletePolicy(ctx context.Context, name string) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		used, err := s.exists(ctx, tx, `SELECT 1 FROM registry_policy_attachments WHERE policy_name = ?`, name)
		if err != nil {
			return mapErr(err, "check policy use")
		}
		if used {
			return errkind.New(errkind.Conflict, "policy %q is attached to a certificate: detach it first", name)
		}
		if _, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM registry_policies WHERE name = ?`), name); err != nil {
			return mapErr(err, "delete policy")
		}
		return nil
	})
}

// PutCertificate inserts a certificate; an existing one is kept as it is.
func (s *RegistryStore) PutCertificate(ctx context.Context, c provider.Certificate) error {
	err := s.d.insert(ctx, &insertCertificate, c.ID, c.PEM, c.CAID, c.Status, millis(c.CreatedAt))
	return mapErr(err, "register certificate")
}

// GetCertificate returns a certificate or errkind.NotFound.
func (s *RegistryStore) GetCertificate(ctx context.Context, id string) (provider.Certificate, error) {
	c := provider.Certificate{ID: id}
	var created int64
	err := s.d.w(ctx).QueryRowContext(ctx, s.d.q(`SELECT pem, ca_id, status, created_at FROM registry_certificates WHERE id = ?`), id).
		Scan(&c.PEM, &c.CAID, &c.Status, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return c, errkind.New(errkind.NotFound, "certificate %s does not exist", id)
	}
	if err != nil {
		return c, mapErr(err, "read certificate")
	}
	c.CreatedAt = fromMillis(created)
	return c, nil
}

// AttachThingPrincipal links a certificate to a thing (idempotent).
func (s *RegistryStore) AttachThingPrincipal(ctx context.Context, thing, certID string) error {
	return s.link(ctx, "attach principal",
		`INSERT INTO registry_thing_principals (thing_name, cert_id)
		 SELECT CAST(? AS TEXT), CAST(? AS TEXT)
		 WHERE EXISTS (SELECT 1 FROM registry_things WHERE name = ?) AND EXISTS (SELECT 1 FROM registry_certificates WHERE id = ?)
		 ON CONFLICT (thing_name, cert_id) DO NOTHING`, &insertPrincipal,
		linkEnd{"thing", thing, qThingExists}, linkEnd{"certificate", certID, qCertExists})
}

// linkEnd is one side of a link row: what it is, its key, and the query
// that finds it.
type linkEnd struct{ what, name, query string }

// link inserts a row linking a to b with insert, which takes a's and b's
// keys twice (the row, then the existence checks) and inserts nothing when
// either is missing or the link exists. That is one statement where a
// transaction of two checks and an insert took five round trips on the
// database's single connection (it runs for every provisioned core); only
// when nothing was inserted are the checks run again to tell a missing side
// (errkind.NotFound) from an existing link (nil, idempotent). In a
// transaction that defers inserts the row is held as held (a plain insert
// of a's and b's keys): the foreign keys check both sides when it is sent.
func (s *RegistryStore) link(ctx context.Context, what, insert string, held *insertSQL, a, b linkEnd) error {
	if s.d.defers(ctx) {
		return mapErr(s.d.insert(ctx, held, a.name, b.name), what)
	}
	res, err := s.d.w(ctx).ExecContext(ctx, s.d.q(insert), a.name, b.name, a.name, b.name)
	if err != nil {
		return mapErr(err, what)
	}
	if n, err := res.RowsAffected(); err != nil {
		return mapErr(err, what)
	} else if n == 1 {
		return nil
	}
	for _, e := range []linkEnd{a, b} {
		if err := s.mustExist(ctx, s.d.w(ctx), e.what, e.name, e.query); err != nil {
			return err
		}
	}
	return nil
}

// GetPolicy returns a policy or errkind.NotFound.
func (s *RegistryStore) GetPolicy(ctx context.Context, name string) (provider.Policy, error) {
	p := provider.Policy{Name: name}
	err := s.d.readKey(ctx, s.d.lookup(ctx), "registry_policies", name).QueryRowContext(ctx, s.d.q(`SELECT document FROM registry_policies WHERE name = ?`), name).Scan(&p.Document)
	if errors.Is(err, sql.ErrNoRows) {
		return p, errkind.New(errkind.NotFound, "policy %q does not exist", name)
	}
	return p, mapErr(err, "read policy")
}

// PutPolicy creates or replaces a policy and reports whether it created it.
func (s *RegistryStore) PutPolicy(ctx context.Context, p provider.Policy, now time.Time) (bool, error) {
	created := false
	err := s.d.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO registry_policies (name, document, created_at, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO NOTHING`), p.Name, p.Document, millis(now), millis(now))
		if err != nil {
			return mapErr(err, "create policy")
		}
		if n, err := res.RowsAffected(); err != nil {
			return mapErr(err, "create policy")
		} else if n == 1 {
			created = true
			return nil
		}
		_, err = tx.ExecContext(ctx, s.d.q(`UPDATE registry_policies SET document = ?, updated_at = ? WHERE name = ?`),
			p.Document, millis(now), p.Name)
		return mapErr(err, "replace policy")
	})
	return created, err
}

// AttachPolicy links a policy to a certificate (idempotent).
func (s *RegistryStore) AttachPolicy(ctx context.Context, policy, certID string) error {
	return s.link(ctx, "attach policy",
		`INSERT INTO registry_policy_attachments (policy_name, cert_id)
		 SELECT CAST(? AS TEXT), CAST(? AS TEXT)
		 WHERE EXISTS (SELECT 1 FROM registry_policies WHERE name = ?) AND EXISTS (SELECT 1 FROM registry_certificates WHERE id = ?)
		 ON CONFLICT (policy_name, cert_id) DO NOTHING`, &insertPolicyAttachment,
		linkEnd{"policy", policy, qPolicyExists}, linkEnd{"certificate", certID, qCertExists})
}

// CreateThingGroup inserts a group; an existing group is kept as it is.
func (s *RegistryStore) CreateThingGroup(ctx context.Context, name, description string, now time.Time) error {
	err := s.d.insert(ctx, &insertGroup, name, description, millis(now))
	return mapErr(err, "create thing group")
}

// AddThingToGroup is idempotent; errkind.NotFound if either is missing.
func (s *RegistryStore) AddThingToGroup(ctx context.Context, thing, group string) error {
	return s.link(ctx, "add thing to group",
		`INSERT INTO registry_group_members (thing_name, group_name)
		 SELECT CAST(? AS TEXT), CAST(? AS TEXT)
		 WHERE EXISTS (SELECT 1 FROM registry_things WHERE name = ?) AND EXISTS (SELECT 1 FROM registry_thing_groups WHERE name = ?)
		 ON CONFLICT (group_name, thing_name) DO NOTHING`, &insertGroupMember,
		linkEnd{"thing", thing, qThingExists}, linkEnd{"thing group", group, qGroupExists})
}

// RemoveThingFromGroup is idempotent.
func (s *RegistryStore) RemoveThingFromGroup(ctx context.Context, thing, group string) error {
	_, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`DELETE FROM registry_group_members WHERE group_name = ? AND thing_name = ?`), group, thing)
	return mapErr(err, "remove thing from group")
}

// ListThingsInGroup returns a group's members, sorted, or errkind.NotFound.
func (s *RegistryStore) ListThingsInGroup(ctx context.Context, group string) ([]string, error) {
	var out []string
	err := s.d.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.mustExist(ctx, tx, "thing group", group, qGroupExists); err != nil {
			return err
		}
		var err error
		out, err = s.column(ctx, tx, "list things in group", `SELECT thing_name FROM registry_group_members WHERE group_name = ?`, group)
		return err
	})
	return out, err
}

// ListThingGroupsForThing returns a thing's groups, sorted.
func (s *RegistryStore) ListThingGroupsForThing(ctx context.Context, thing string) ([]string, error) {
	return s.column(ctx, s.d.w(ctx), "list groups of thing", `SELECT group_name FROM registry_group_members WHERE thing_name = ?`, thing)
}

// MarkCoreRegistered records a core registration (idempotent).
func (s *RegistryStore) MarkCoreRegistered(ctx context.Context, name string, at time.Time) error {
	s.d.written(ctx, tableCoreDevices, name)
	_, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`INSERT INTO registry_core_devices (name, registered_at) VALUES (?, ?)
		ON CONFLICT (name) DO NOTHING`), name, millis(at))
	return mapErr(err, "register core")
}

// GetCoreDevice returns a core registration or errkind.NotFound, through
// the read pool (the device block of GET /cores/{name}); a registration is
// visible once it commits.
func (s *RegistryStore) GetCoreDevice(ctx context.Context, name string) (provider.CoreDevice, error) {
	c := provider.CoreDevice{Name: name}
	if s.d.absent(ctx, tableCoreDevices, name) {
		return c, errkind.New(errkind.NotFound, "core device %q is not registered", name)
	}
	var last int64
	err := s.d.readKey(ctx, s.d.r(ctx), tableCoreDevices, name).QueryRowContext(ctx, s.d.q(`SELECT status, core_version, platform, architecture, last_status_at
		FROM registry_core_devices WHERE name = ?`), name).Scan(&c.Status, &c.CoreVersion, &c.Platform, &c.Architecture, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return c, errkind.New(errkind.NotFound, "core device %q is not registered", name)
	}
	if err != nil {
		return c, mapErr(err, "read core device")
	}
	c.LastStatus = fromMillis(last)
	return c, nil
}

// UpdateCoreStatus stores a core's reported status, registering it if needed.
func (s *RegistryStore) UpdateCoreStatus(ctx context.Context, c provider.CoreDevice) error {
	at := millis(c.LastStatus)
	s.d.written(ctx, tableCoreDevices, c.Name)
	_, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`INSERT INTO registry_core_devices
		(name, registered_at, status, core_version, platform, architecture, last_status_at) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET status = excluded.status, core_version = excluded.core_version,
		platform = excluded.platform, architecture = excluded.architecture, last_status_at = excluded.last_status_at`),
		c.Name, at, c.Status, c.CoreVersion, c.Platform, c.Architecture, at)
	return mapErr(err, "update core status")
}

// DeleteCoreDevice removes a core registration and its associations.
func (s *RegistryStore) DeleteCoreDevice(ctx context.Context, name string) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		for _, st := range []string{
			`DELETE FROM registry_client_devices WHERE core_name = ?`,
			`DELETE FROM registry_core_devices WHERE name = ?`,
		} {
			if _, err := tx.ExecContext(ctx, s.d.q(st), name); err != nil {
				return mapErr(err, "delete core device")
			}
		}
		return nil
	})
}

// AssociateClientDevices links to core, in one transaction, each of
// devices that is a thing (idempotent: an existing association keeps its
// timestamp), and returns the others, left alone.
func (s *RegistryStore) AssociateClientDevices(ctx context.Context, core string, devices []string, at time.Time) ([]string, error) {
	var missing []string
	err := s.d.InTx(ctx, func(tx *sql.Tx) error {
		missing = nil
		exists, err := s.present(ctx, tx, "look up client devices", tableThings, devices)
		if err != nil {
			return err
		}
		for _, d := range devices {
			if !exists[d] {
				missing = append(missing, d)
			}
		}
		return eachInList(devices, func(marks string, names []any) error {
			args := append([]any{core, millis(at)}, names...)
			_, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO registry_client_devices (core_name, device_name, associated_at)
				SELECT ?, name, ? FROM registry_things WHERE name IN (`+marks+`)
				ON CONFLICT (core_name, device_name) DO NOTHING`), args...)
			return mapErr(err, fmt.Sprintf("associate client devices with core %s", core))
		})
	})
	return missing, err
}

// DisassociateClientDevices removes the associations of devices with
// core, in one transaction; a device that is not associated is left alone.
func (s *RegistryStore) DisassociateClientDevices(ctx context.Context, core string, devices []string) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		return eachInList(devices, func(marks string, names []any) error {
			args := append([]any{core}, names...)
			_, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM registry_client_devices WHERE core_name = ? AND device_name IN (`+marks+`)`), args...)
			return mapErr(err, fmt.Sprintf("disassociate client devices from core %s", core))
		})
	})
}

// ListClientDevices returns a core's associations, sorted by device name.
func (s *RegistryStore) ListClientDevices(ctx context.Context, core string) ([]provider.Association, error) {
	rows, err := s.d.w(ctx).QueryContext(ctx, s.d.q(`SELECT device_name, associated_at FROM registry_client_devices WHERE core_name = ?`), core)
	if err != nil {
		return nil, mapErr(err, "list client devices")
	}
	defer rows.Close()
	out := []provider.Association{}
	for rows.Next() {
		var a provider.Association
		var at int64
		if err := rows.Scan(&a.ThingName, &at); err != nil {
			return nil, mapErr(err, "list client devices")
		}
		a.AssociatedAt = fromMillis(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, "list client devices")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ThingName < out[j].ThingName })
	return out, nil
}
