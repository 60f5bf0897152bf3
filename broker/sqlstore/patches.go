package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

var _ patches.Store = (*DB)(nil)

// CreatePatchTemplate stores version 1 of a new patch template;
// errkind.Conflict if the name is taken.
func (d *DB) CreatePatchTemplate(ctx context.Context, t patches.Template) error {
	doc, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode patch template %q: %w", t.Name, err)
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO patch_templates (name, latest, created_at, updated_at) VALUES (?, 1, ?, ?)`),
			t.Name, millis(t.CreatedAt.Time), millis(t.UpdatedAt.Time)); err != nil {
			return mapErr(err, fmt.Sprintf("create patch template %q", t.Name))
		}
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO patch_template_versions (name, version_no, document, created_at) VALUES (?, 1, ?, ?)`),
			t.Name, string(doc), millis(t.UpdatedAt.Time))
		return mapErr(err, fmt.Sprintf("create patch template %q version 1", t.Name))
	})
}

// AddPatchTemplateVersion stores t as version t.VersionNo, which must be
// the latest plus one (errkind.Conflict otherwise, errkind.NotFound if the
// template is gone).
func (d *DB) AddPatchTemplateVersion(ctx context.Context, t patches.Template) error {
	doc, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode patch template %q: %w", t.Name, err)
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, d.q(`UPDATE patch_templates SET latest = ?, updated_at = ? WHERE name = ? AND latest = ?`),
			t.VersionNo, millis(t.UpdatedAt.Time), t.Name, t.VersionNo-1)
		if err != nil {
			return mapErr(err, fmt.Sprintf("update patch template %q", t.Name))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var latest int
			err := tx.QueryRowContext(ctx, d.q(`SELECT latest FROM patch_templates WHERE name = ?`), t.Name).Scan(&latest)
			if errors.Is(err, sql.ErrNoRows) {
				return errkind.New(errkind.NotFound, "patch template %q not found", t.Name)
			}
			return errkind.New(errkind.Conflict, "patch template %q is at version %d, not %d", t.Name, latest, t.VersionNo-1)
		}
		_, err = tx.ExecContext(ctx, d.q(`INSERT INTO patch_template_versions (name, version_no, document, created_at) VALUES (?, ?, ?, ?)`),
			t.Name, t.VersionNo, string(doc), millis(t.UpdatedAt.Time))
		return mapErr(err, fmt.Sprintf("add patch template %q version %d", t.Name, t.VersionNo))
	})
}

// GetPatchTemplate returns version versionNo of a template (0: the latest).
func (d *DB) GetPatchTemplate(ctx context.Context, name string, versionNo int) (patches.Template, error) {
	var row *sql.Row
	if versionNo == 0 {
		row = d.w(ctx).QueryRowContext(ctx, d.q(`SELECT v.document FROM patch_templates t JOIN patch_template_versions v ON v.name = t.name AND v.version_no = t.latest WHERE t.name = ?`), name)
	} else {
		row = d.w(ctx).QueryRowContext(ctx, d.q(`SELECT document FROM patch_template_versions WHERE name = ? AND version_no = ?`), name, versionNo)
	}
	var doc string
	err := row.Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		if versionNo == 0 {
			return patches.Template{}, errkind.New(errkind.NotFound, "patch template %q not found", name)
		}
		return patches.Template{}, errkind.New(errkind.NotFound, "patch template %q has no version %d", name, versionNo)
	}
	if err != nil {
		return patches.Template{}, mapErr(err, fmt.Sprintf("get patch template %q", name))
	}
	var t patches.Template
	if err := json.Unmarshal([]byte(doc), &t); err != nil {
		return patches.Template{}, fmt.Errorf("decode patch template %q: %w", name, err)
	}
	return t, nil
}

// ListPatchTemplates returns up to count latest versions by name after the
// cursor, and whether more exist.
func (d *DB) ListPatchTemplates(ctx context.Context, count int, after string) ([]patches.Template, bool, error) {
	if count < 1 {
		count = 100
	}
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT v.document FROM patch_templates t JOIN patch_template_versions v ON v.name = t.name AND v.version_no = t.latest WHERE t.name > ? ORDER BY t.name LIMIT ?`),
		after, count+1)
	if err != nil {
		return nil, false, mapErr(err, "list patch templates")
	}
	defer rows.Close()
	var out []patches.Template
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, false, mapErr(err, "list patch templates")
		}
		var t patches.Template
		if err := json.Unmarshal([]byte(doc), &t); err != nil {
			return nil, false, fmt.Errorf("decode patch template: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, "list patch templates")
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}

// DeletePatchTemplate deletes a template, its versions and artifact
// records; errkind.NotFound if missing.
func (d *DB) DeletePatchTemplate(ctx context.Context, name string) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM patch_template_versions WHERE name = ?`, `DELETE FROM patch_artifacts WHERE template_name = ?`} {
			if _, err := tx.ExecContext(ctx, d.q(q), name); err != nil {
				return mapErr(err, fmt.Sprintf("delete patch template %q", name))
			}
		}
		res, err := tx.ExecContext(ctx, d.q(`DELETE FROM patch_templates WHERE name = ?`), name)
		if err != nil {
			return mapErr(err, fmt.Sprintf("delete patch template %q", name))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "patch template %q not found", name)
		}
		return nil
	})
}

// PutPatchArtifact records (or replaces) a template's artifact.
func (d *DB) PutPatchArtifact(ctx context.Context, a patches.Artifact) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`DELETE FROM patch_artifacts WHERE template_name = ? AND name = ?`), a.TemplateName, a.Name); err != nil {
			return mapErr(err, "replace patch artifact")
		}
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO patch_artifacts (template_name, name, sha256, bytes, updated_at) VALUES (?, ?, ?, ?, ?)`),
			a.TemplateName, a.Name, a.SHA256, a.Bytes, millis(a.UpdatedAt.Time))
		return mapErr(err, fmt.Sprintf("store artifact %q of patch template %q", a.Name, a.TemplateName))
	})
}

// GetPatchArtifact returns a template's artifact record.
func (d *DB) GetPatchArtifact(ctx context.Context, template, name string) (patches.Artifact, error) {
	a := patches.Artifact{TemplateName: template, Name: name}
	var updated int64
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT sha256, bytes, updated_at FROM patch_artifacts WHERE template_name = ? AND name = ?`), template, name).
		Scan(&a.SHA256, &a.Bytes, &updated)
	if err != nil {
		return a, mapErr(err, fmt.Sprintf("artifact %q of patch template %q", name, template))
	}
	a.UpdatedAt = cdf.At(fromMillis(updated))
	return a, nil
}

// PutPatchTarget creates or replaces a target profile.
func (d *DB) PutPatchTarget(ctx context.Context, t patches.Target) error {
	conn, err := json.Marshal(t.Connection)
	if err != nil {
		return fmt.Errorf("encode target %q: %w", t.DeviceID, err)
	}
	probe, err := encodeProbe(t.LastProbe)
	if err != nil {
		return err
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`DELETE FROM patch_targets WHERE device_id = ?`), t.DeviceID); err != nil {
			return mapErr(err, "replace target")
		}
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO patch_targets (device_id, core_name, connection, last_probe, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`),
			t.DeviceID, t.CoreName, string(conn), probe, millis(t.CreatedAt.Time), millis(t.UpdatedAt.Time))
		return mapErr(err, fmt.Sprintf("store target %q", t.DeviceID))
	})
}

func encodeProbe(p *patches.Probe) (string, error) {
	if p == nil {
		return "", nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encode probe: %w", err)
	}
	return string(b), nil
}

const targetColumns = `device_id, core_name, connection, last_probe, created_at, updated_at`

func scanTarget(sc interface{ Scan(...any) error }) (patches.Target, error) {
	var t patches.Target
	var conn, probe string
	var created, updated int64
	if err := sc.Scan(&t.DeviceID, &t.CoreName, &conn, &probe, &created, &updated); err != nil {
		return t, err
	}
	if err := json.Unmarshal([]byte(conn), &t.Connection); err != nil {
		return t, fmt.Errorf("decode target %q: %w", t.DeviceID, err)
	}
	if probe != "" {
		t.LastProbe = &patches.Probe{}
		if err := json.Unmarshal([]byte(probe), t.LastProbe); err != nil {
			return t, fmt.Errorf("decode probe of target %q: %w", t.DeviceID, err)
		}
	}
	t.CreatedAt, t.UpdatedAt = cdf.At(fromMillis(created)), cdf.At(fromMillis(updated))
	return t, nil
}

// GetPatchTarget returns a device's target profile.
func (d *DB) GetPatchTarget(ctx context.Context, deviceID string) (patches.Target, error) {
	t, err := scanTarget(d.w(ctx).QueryRowContext(ctx, d.q(`SELECT `+targetColumns+` FROM patch_targets WHERE device_id = ?`), deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return t, errkind.New(errkind.NotFound, "target %q not found: PUT /targets/%s first", deviceID, deviceID)
	}
	if err != nil {
		return t, mapErr(err, fmt.Sprintf("get target %q", deviceID))
	}
	return t, nil
}

// ListPatchTargets lists targets by device id after the cursor, of one
// core when core is not "".
func (d *DB) ListPatchTargets(ctx context.Context, core string, count int, after string) ([]patches.Target, bool, error) {
	if count < 1 {
		count = 100
	}
	q, args := `SELECT `+targetColumns+` FROM patch_targets WHERE device_id > ?`, []any{after}
	if core != "" {
		q += ` AND core_name = ?`
		args = append(args, core)
	}
	rows, err := d.w(ctx).QueryContext(ctx, d.q(q+` ORDER BY device_id LIMIT ?`), append(args, count+1)...)
	if err != nil {
		return nil, false, mapErr(err, "list targets")
	}
	defer rows.Close()
	var out []patches.Target
	for rows.Next() {
		t, err := scanTarget(rows)
		if err != nil {
			return nil, false, mapErr(err, "list targets")
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, "list targets")
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}

// DeletePatchTarget deletes a target; errkind.NotFound if missing.
func (d *DB) DeletePatchTarget(ctx context.Context, deviceID string) error {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`DELETE FROM patch_targets WHERE device_id = ?`), deviceID)
	if err != nil {
		return mapErr(err, fmt.Sprintf("delete target %q", deviceID))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "target %q not found", deviceID)
	}
	return nil
}

// SetPatchTargetProbe records a target's latest probe.
func (d *DB) SetPatchTargetProbe(ctx context.Context, deviceID string, p patches.Probe) error {
	probe, err := encodeProbe(&p)
	if err != nil {
		return err
	}
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE patch_targets SET last_probe = ? WHERE device_id = ?`), probe, deviceID)
	if err != nil {
		return mapErr(err, fmt.Sprintf("record probe of target %q", deviceID))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "target %q not found", deviceID)
	}
	return nil
}

// CreatePatchTask stores a task and its patches in one transaction.
func (d *DB) CreatePatchTask(ctx context.Context, t patches.Task, ps []patches.Patch) error {
	opts, err := json.Marshal(t.Options)
	if err != nil {
		return fmt.Errorf("encode patch task options: %w", err)
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO patch_tasks (task_id, options, deadline, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`),
			t.TaskID, string(opts), millis(t.Deadline), millis(t.CreatedAt.Time), millis(t.UpdatedAt.Time)); err != nil {
			return mapErr(err, fmt.Sprintf("create patch task %s", t.TaskID))
		}
		for _, p := range ps {
			args, err := patchArgs(p)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO patches (`+patchColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
				args...); err != nil {
				return mapErr(err, fmt.Sprintf("create patch %s", p.PatchID))
			}
		}
		return nil
	})
}

// GetPatchTask returns a task (without its counts).
func (d *DB) GetPatchTask(ctx context.Context, id string) (patches.Task, error) {
	t := patches.Task{TaskID: id}
	var opts string
	var deadline, created, updated int64
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT options, deadline, created_at, updated_at FROM patch_tasks WHERE task_id = ?`), id).
		Scan(&opts, &deadline, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return t, errkind.New(errkind.NotFound, "patch task %s not found", id)
	}
	if err != nil {
		return t, mapErr(err, fmt.Sprintf("get patch task %s", id))
	}
	if err := json.Unmarshal([]byte(opts), &t.Options); err != nil {
		return t, fmt.Errorf("decode options of patch task %s: %w", id, err)
	}
	t.Deadline = fromMillis(deadline)
	t.CreatedAt, t.UpdatedAt = cdf.At(fromMillis(created)), cdf.At(fromMillis(updated))
	return t, nil
}

// CountTaskPatches counts a task's patches by status.
func (d *DB) CountTaskPatches(ctx context.Context, taskID string) (map[string]int, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT status, COUNT(*) FROM patches WHERE task_id = ? GROUP BY status`), taskID)
	if err != nil {
		return nil, mapErr(err, "count patches")
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, mapErr(err, "count patches")
		}
		out[s] = n
	}
	return out, mapErr(rows.Err(), "count patches")
}

const patchColumns = `patch_id, task_id, device_id, core_name, template_name, template_version, patch_type, status, status_message, extra_vars, attempt, seq, steps, dispatched_at, not_before, last_event_at, deadline, rev, created_at, updated_at`

func patchArgs(p patches.Patch) ([]any, error) {
	vars, steps := "", ""
	if p.ExtraVars != nil {
		b, err := json.Marshal(p.ExtraVars)
		if err != nil {
			return nil, fmt.Errorf("encode extraVars of patch %s: %w", p.PatchID, err)
		}
		vars = string(b)
	}
	if p.Steps != nil {
		b, err := json.Marshal(p.Steps)
		if err != nil {
			return nil, fmt.Errorf("encode steps of patch %s: %w", p.PatchID, err)
		}
		steps = string(b)
	}
	rev := p.Rev
	if rev == 0 {
		rev = 1
	}
	return []any{p.PatchID, p.TaskID, p.DeviceID, p.CoreName, p.PatchTemplateName, p.PatchTemplateVersion, p.PatchType,
		p.PatchStatus, p.StatusMessage, vars, p.Attempt, p.Seq, steps, millis(p.DispatchedAt), millis(p.NotBefore),
		millis(p.LastEventAt), millis(p.Deadline), rev, millis(p.CreatedAt.Time), millis(p.UpdatedAt.Time)}, nil
}

func scanPatch(sc interface{ Scan(...any) error }) (patches.Patch, error) {
	var p patches.Patch
	var vars, steps string
	var dispatched, notBefore, lastEvent, deadline, created, updated int64
	if err := sc.Scan(&p.PatchID, &p.TaskID, &p.DeviceID, &p.CoreName, &p.PatchTemplateName, &p.PatchTemplateVersion, &p.PatchType,
		&p.PatchStatus, &p.StatusMessage, &vars, &p.Attempt, &p.Seq, &steps, &dispatched, &notBefore, &lastEvent, &deadline,
		&p.Rev, &created, &updated); err != nil {
		return p, err
	}
	if vars != "" {
		if err := json.Unmarshal([]byte(vars), &p.ExtraVars); err != nil {
			return p, fmt.Errorf("decode extraVars of patch %s: %w", p.PatchID, err)
		}
	}
	if steps != "" {
		var s []patchmsg.StepResult
		if err := json.Unmarshal([]byte(steps), &s); err != nil {
			return p, fmt.Errorf("decode steps of patch %s: %w", p.PatchID, err)
		}
		p.Steps = s
	}
	p.DispatchedAt, p.NotBefore, p.LastEventAt, p.Deadline = fromMillis(dispatched), fromMillis(notBefore), fromMillis(lastEvent), fromMillis(deadline)
	p.CreatedAt, p.UpdatedAt = cdf.At(fromMillis(created)), cdf.At(fromMillis(updated))
	return p, nil
}

func (d *DB) queryPatches(ctx context.Context, what, query string, args ...any) ([]patches.Patch, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(query), args...)
	if err != nil {
		return nil, mapErr(err, what)
	}
	defer rows.Close()
	var out []patches.Patch
	for rows.Next() {
		p, err := scanPatch(rows)
		if err != nil {
			return nil, mapErr(err, what)
		}
		out = append(out, p)
	}
	return out, mapErr(rows.Err(), what)
}

// patchCursor encodes a position in (created_at, patch_id) order.
func patchCursor(p patches.Patch) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(millis(p.CreatedAt.Time), 10) + ":" + p.PatchID))
}

func parsePatchCursor(c string) (int64, string, error) {
	if c == "" {
		return -1, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		ms, id, ok := strings.Cut(string(b), ":")
		if n, perr := strconv.ParseInt(ms, 10, 64); ok && perr == nil {
			return n, id, nil
		}
	}
	return 0, "", errkind.New(errkind.Invalid, "exclusiveStartToken %q is not a token this API returned (pagination.lastEvaluated.nextToken)", c)
}

// listPatches pages through patches matching where in creation order.
func (d *DB) listPatches(ctx context.Context, where string, args []any, count int, after string) ([]patches.Patch, string, error) {
	if count < 1 {
		count = 100
	}
	ms, id, err := parsePatchCursor(after)
	if err != nil {
		return nil, "", err
	}
	q := `SELECT ` + patchColumns + ` FROM patches WHERE ` + where + ` AND (created_at > ? OR (created_at = ? AND patch_id > ?)) ORDER BY created_at, patch_id LIMIT ?`
	out, err := d.queryPatches(ctx, "list patches", q, append(args, ms, ms, id, count+1)...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > count {
		out = out[:count]
		next = patchCursor(out[count-1])
	}
	return out, next, nil
}

// ListTaskPatches pages through a task's patches.
func (d *DB) ListTaskPatches(ctx context.Context, taskID string, count int, after string) ([]patches.Patch, string, error) {
	return d.listPatches(ctx, `task_id = ?`, []any{taskID}, count, after)
}

// ListDevicePatches pages through a device's patches, of one status when
// status is not "".
func (d *DB) ListDevicePatches(ctx context.Context, deviceID, status string, count int, after string) ([]patches.Patch, string, error) {
	if status != "" {
		return d.listPatches(ctx, `device_id = ? AND status = ?`, []any{deviceID, status}, count, after)
	}
	return d.listPatches(ctx, `device_id = ?`, []any{deviceID}, count, after)
}

// GetPatch returns a patch.
func (d *DB) GetPatch(ctx context.Context, id string) (patches.Patch, error) {
	p, err := scanPatch(d.w(ctx).QueryRowContext(ctx, d.q(`SELECT `+patchColumns+` FROM patches WHERE patch_id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, errkind.New(errkind.NotFound, "patch %s not found", id)
	}
	if err != nil {
		return p, mapErr(err, fmt.Sprintf("get patch %s", id))
	}
	return p, nil
}

// UpdatePatch saves p if the stored revision is still p.Rev and returns
// it with its new revision; errkind.Conflict if another writer came first.
func (d *DB) UpdatePatch(ctx context.Context, p patches.Patch) (patches.Patch, error) {
	args, err := patchArgs(p)
	if err != nil {
		return p, err
	}
	// Every column but the key and created_at; rev is bumped.
	set := `core_name = ?, template_name = ?, template_version = ?, patch_type = ?, status = ?, status_message = ?, extra_vars = ?, attempt = ?, seq = ?, steps = ?, dispatched_at = ?, not_before = ?, last_event_at = ?, deadline = ?, rev = ?, updated_at = ?`
	vals := append([]any{}, args[3:17]...)
	vals = append(vals, p.Rev+1, args[19], p.PatchID, p.Rev)
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE patches SET `+set+` WHERE patch_id = ? AND rev = ?`), vals...)
	if err != nil {
		return p, mapErr(err, fmt.Sprintf("update patch %s", p.PatchID))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := d.GetPatch(ctx, p.PatchID); err != nil {
			return p, err
		}
		return p, errkind.New(errkind.Conflict, "patch %s changed meanwhile", p.PatchID)
	}
	p.Rev++
	return p, nil
}

// DeletePatch deletes a patch and its logs; errkind.NotFound if missing.
func (d *DB) DeletePatch(ctx context.Context, id string) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`DELETE FROM patch_logs WHERE patch_id = ?`), id); err != nil {
			return mapErr(err, fmt.Sprintf("delete logs of patch %s", id))
		}
		res, err := tx.ExecContext(ctx, d.q(`DELETE FROM patches WHERE patch_id = ?`), id)
		if err != nil {
			return mapErr(err, fmt.Sprintf("delete patch %s", id))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "patch %s not found", id)
		}
		return nil
	})
}

// OpenPatches returns every patch without an outcome, in creation order.
func (d *DB) OpenPatches(ctx context.Context) ([]patches.Patch, error) {
	return d.queryPatches(ctx, "list open patches", `SELECT `+patchColumns+` FROM patches WHERE status NOT IN ('success', 'failed') ORDER BY created_at, patch_id`)
}

// OpenCorePatches returns the patches without an outcome sent to core.
func (d *DB) OpenCorePatches(ctx context.Context, core string) ([]patches.Patch, error) {
	return d.queryPatches(ctx, "list open patches of a core", `SELECT `+patchColumns+` FROM patches WHERE core_name = ? AND status NOT IN ('success', 'failed') ORDER BY created_at, patch_id`, core)
}

// AppendPatchLog stores a log chunk once (a repeated key is ignored) and
// drops the oldest chunks of its (patch, attempt, step, stream) while they
// hold more than limit bytes.
func (d *DB) AppendPatchLog(ctx context.Context, c patches.LogChunk, limit int64) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		key := []any{c.PatchID, c.Attempt, c.Step, c.Stream}
		var n int
		if err := tx.QueryRowContext(ctx, d.q(`SELECT COUNT(*) FROM patch_logs WHERE patch_id = ? AND attempt = ? AND step = ? AND stream = ? AND seq = ?`),
			append(key, c.Seq)...).Scan(&n); err != nil {
			return mapErr(err, "read patch log")
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO patch_logs (patch_id, attempt, step, stream, seq, data, bytes, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			append(key, c.Seq, c.Data, len(c.Data), millis(c.ReceivedAt))...); err != nil {
			return mapErr(err, "store patch log")
		}
		var total int64
		if err := tx.QueryRowContext(ctx, d.q(`SELECT COALESCE(SUM(bytes), 0) FROM patch_logs WHERE patch_id = ? AND attempt = ? AND step = ? AND stream = ?`),
			key...).Scan(&total); err != nil {
			return mapErr(err, "size patch log")
		}
		if total <= limit {
			return nil
		}
		rows, err := tx.QueryContext(ctx, d.q(`SELECT seq, bytes FROM patch_logs WHERE patch_id = ? AND attempt = ? AND step = ? AND stream = ? ORDER BY seq`), key...)
		if err != nil {
			return mapErr(err, "trim patch log")
		}
		var drop []int64
		for rows.Next() && total > limit {
			var seq, b int64
			if err := rows.Scan(&seq, &b); err != nil {
				rows.Close()
				return mapErr(err, "trim patch log")
			}
			drop = append(drop, seq)
			total -= b
		}
		rows.Close()
		for _, seq := range drop {
			if _, err := tx.ExecContext(ctx, d.q(`DELETE FROM patch_logs WHERE patch_id = ? AND attempt = ? AND step = ? AND stream = ? AND seq = ?`),
				append(key, seq)...); err != nil {
				return mapErr(err, "trim patch log")
			}
		}
		return nil
	})
}

// PatchLogs returns an attempt's stored output in arrival order, of one
// step and stream when they are not "".
func (d *DB) PatchLogs(ctx context.Context, patchID string, attempt int, step, stream string) ([]byte, error) {
	q, args := `SELECT data FROM patch_logs WHERE patch_id = ? AND attempt = ?`, []any{patchID, attempt}
	if step != "" {
		q += ` AND step = ?`
		args = append(args, step)
	}
	if stream != "" {
		q += ` AND stream = ?`
		args = append(args, stream)
	}
	rows, err := d.w(ctx).QueryContext(ctx, d.q(q+` ORDER BY received_at, step, stream, seq`), args...)
	if err != nil {
		return nil, mapErr(err, "read patch logs")
	}
	defer rows.Close()
	var out []byte
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, mapErr(err, "read patch logs")
		}
		out = append(out, s...)
	}
	return out, mapErr(rows.Err(), "read patch logs")
}

// PatchLogBytes returns the size of an attempt's stored output.
func (d *DB) PatchLogBytes(ctx context.Context, patchID string, attempt int) (int64, error) {
	var n int64
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT COALESCE(SUM(bytes), 0) FROM patch_logs WHERE patch_id = ? AND attempt = ?`), patchID, attempt).Scan(&n)
	return n, mapErr(err, "size patch logs")
}
