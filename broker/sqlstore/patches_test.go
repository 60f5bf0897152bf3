package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestPatchTemplates(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	at := cdf.At(time.UnixMilli(1_700_000_000_000))
	tpl := patches.Template{Name: "boot strap", PatchType: "agentless", Enabled: true, VersionNo: 1, CreatedAt: at, UpdatedAt: at,
		ExtraVars: map[string]string{"a": "1"}, Steps: []patchmsg.StepSpec{{Name: "s", Run: "true"}}}
	if err := db.CreatePatchTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if err := db.CreatePatchTemplate(ctx, tpl); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("second create: %v, want Conflict", err)
	}
	v2 := tpl
	v2.VersionNo, v2.Enabled, v2.ExtraVars = 2, false, map[string]string{"a": "2"}
	if err := db.AddPatchTemplateVersion(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if err := db.AddPatchTemplateVersion(ctx, v2); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("stale version: %v, want Conflict", err)
	}
	for _, tc := range []struct {
		version int
		wantVer int
		wantA   string
	}{{0, 2, "2"}, {1, 1, "1"}, {2, 2, "2"}} {
		got, err := db.GetPatchTemplate(ctx, tpl.Name, tc.version)
		if err != nil {
			t.Fatal(err)
		}
		if got.VersionNo != tc.wantVer || got.ExtraVars["a"] != tc.wantA || got.Steps[0].Run != "true" {
			t.Errorf("version %d: got %+v", tc.version, got)
		}
	}
	if _, err := db.GetPatchTemplate(ctx, tpl.Name, 3); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("missing version: %v", err)
	}
	for i := range 3 {
		x := tpl
		x.Name = fmt.Sprintf("t%d", i)
		if err := db.CreatePatchTemplate(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	after := ""
	for {
		page, more, err := db.ListPatchTemplates(ctx, 2, after)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			names = append(names, p.Name)
		}
		if !more {
			break
		}
		after = page[len(page)-1].Name
	}
	if got := strings.Join(names, ","); got != "boot strap,t0,t1,t2" {
		t.Errorf("paged names = %s", got)
	}
	if err := db.PutPatchArtifact(ctx, patches.Artifact{TemplateName: "t0", Name: "a.bin", SHA256: "x", Bytes: 3, UpdatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if a, err := db.GetPatchArtifact(ctx, "t0", "a.bin"); err != nil || a.SHA256 != "x" {
		t.Fatalf("artifact: %+v %v", a, err)
	}
	if err := db.DeletePatchTemplate(ctx, "t0"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePatchTemplate(ctx, "t0"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := db.GetPatchArtifact(ctx, "t0", "a.bin"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("artifact of a deleted template: %v", err)
	}
}

func TestPatchTargets(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	at := cdf.At(time.UnixMilli(1_700_000_000_000))
	for i, core := range []string{"c1", "c2", "c1"} {
		tg := patches.Target{Target: patchmsg.Target{DeviceID: fmt.Sprintf("d%d", i), CoreName: core,
			Connection: patchmsg.Connection{Type: "serial", SerialPort: "/dev/ttyS0"}}, CreatedAt: at, UpdatedAt: at}
		if err := db.PutPatchTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	got, more, err := db.ListPatchTargets(ctx, "c1", 10, "")
	if err != nil || more || len(got) != 2 || got[0].DeviceID != "d0" || got[1].DeviceID != "d2" {
		t.Fatalf("list c1: %+v %v %v", got, more, err)
	}
	if got[0].Connection.SerialPort != "/dev/ttyS0" {
		t.Errorf("connection not kept: %+v", got[0].Connection)
	}
	if err := db.SetPatchTargetProbe(ctx, "d1", patches.Probe{ProbeID: "p1", Status: "requested", RequestedAt: at}); err != nil {
		t.Fatal(err)
	}
	tg, err := db.GetPatchTarget(ctx, "d1")
	if err != nil || tg.LastProbe == nil || tg.LastProbe.ProbeID != "p1" {
		t.Fatalf("probe: %+v %v", tg, err)
	}
	if err := db.DeletePatchTarget(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetPatchTarget(ctx, "d1"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("deleted target: %v", err)
	}
	if err := db.SetPatchTargetProbe(ctx, "d1", patches.Probe{}); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("probe of a deleted target: %v", err)
	}
}

func TestPatchTasksAndPatches(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	task := patches.Task{TaskID: "task-1", Options: patches.TaskOptions{MaxConcurrency: 2, MaxFailures: 1}, Deadline: now.Add(time.Hour),
		CreatedAt: cdf.At(now), UpdatedAt: cdf.At(now)}
	var ps []patches.Patch
	for i := range 5 {
		at := cdf.At(now.Add(time.Duration(i%2) * time.Millisecond)) // ties on created_at page by id
		ps = append(ps, patches.Patch{PatchID: fmt.Sprintf("p%d", i), TaskID: task.TaskID, DeviceID: "dev", PatchTemplateName: "t",
			PatchType: "agentbased", PatchStatus: "created", Attempt: 1, ExtraVars: map[string]string{"k": "v"}, CreatedAt: at, UpdatedAt: at})
	}
	if err := db.CreatePatchTask(ctx, task, ps); err != nil {
		t.Fatal(err)
	}
	gotTask, err := db.GetPatchTask(ctx, "task-1")
	if err != nil || gotTask.Options.MaxConcurrency != 2 || !gotTask.Deadline.Equal(task.Deadline) {
		t.Fatalf("task: %+v %v", gotTask, err)
	}
	var ids []string
	after := ""
	for {
		page, next, err := db.ListTaskPatches(ctx, "task-1", 2, after)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			ids = append(ids, p.PatchID)
		}
		if next == "" {
			break
		}
		after = next
	}
	if got := strings.Join(ids, ","); got != "p0,p2,p4,p1,p3" {
		t.Errorf("paged ids = %s", got)
	}
	if _, _, err := db.ListTaskPatches(ctx, "task-1", 2, "garbage!"); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("bad cursor: %v", err)
	}

	p, err := db.GetPatch(ctx, "p1")
	if err != nil || p.Rev != 1 || p.ExtraVars["k"] != "v" {
		t.Fatalf("get: %+v %v", p, err)
	}
	exit := 2
	p.PatchStatus, p.Seq, p.DispatchedAt = "failed", 3, now
	p.Steps = []patchmsg.StepResult{{Index: 0, Name: "s", Status: "failed", ExitCode: &exit}}
	saved, err := db.UpdatePatch(ctx, p)
	if err != nil || saved.Rev != 2 {
		t.Fatalf("update: %+v %v", saved, err)
	}
	if _, err := db.UpdatePatch(ctx, p); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("stale update: %v, want Conflict", err)
	}
	back, _ := db.GetPatch(ctx, "p1")
	if back.PatchStatus != "failed" || back.Seq != 3 || !back.DispatchedAt.Equal(now) || *back.Steps[0].ExitCode != 2 {
		t.Errorf("round trip: %+v", back)
	}
	counts, err := db.CountTaskPatches(ctx, "task-1")
	if err != nil || counts["failed"] != 1 || counts["created"] != 4 {
		t.Errorf("counts: %v %v", counts, err)
	}
	open, err := db.OpenPatches(ctx)
	if err != nil || len(open) != 4 {
		t.Errorf("open: %d %v", len(open), err)
	}
	failed, _, err := db.ListDevicePatches(ctx, "dev", "failed", 10, "")
	if err != nil || len(failed) != 1 || failed[0].PatchID != "p1" {
		t.Errorf("device filter: %+v %v", failed, err)
	}
	if err := db.DeletePatch(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePatch(ctx, "p1"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := db.UpdatePatch(ctx, back); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("update of a deleted patch: %v", err)
	}
}

func TestPatchLogsKeepTheTail(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	chunk := func(seq int64, data string) patches.LogChunk {
		return patches.LogChunk{PatchID: "p", Attempt: 1, Step: "s", Stream: "stdout", Seq: seq, Data: data, ReceivedAt: time.UnixMilli(1000 + seq)}
	}
	for i := range 5 {
		if err := db.AppendPatchLog(ctx, chunk(int64(i), fmt.Sprintf("%d234", i)), 12); err != nil {
			t.Fatal(err)
		}
	}
	// A repeated chunk is stored once.
	if err := db.AppendPatchLog(ctx, chunk(4, "xxxx"), 12); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendPatchLog(ctx, patches.LogChunk{PatchID: "p", Attempt: 1, Step: "s", Stream: "stderr", Seq: 0, Data: "err", ReceivedAt: time.UnixMilli(2000)}, 12); err != nil {
		t.Fatal(err)
	}
	out, err := db.PatchLogs(ctx, "p", 1, "s", "stdout")
	if err != nil || string(out) != "223432344234" {
		t.Errorf("stdout = %q, %v", out, err)
	}
	all, _ := db.PatchLogs(ctx, "p", 1, "", "")
	if string(all) != "223432344234err" {
		t.Errorf("all = %q", all)
	}
	if n, err := db.PatchLogBytes(ctx, "p", 1); err != nil || n != 15 {
		t.Errorf("bytes = %d, %v", n, err)
	}
	if n, _ := db.PatchLogBytes(ctx, "p", 2); n != 0 {
		t.Errorf("other attempt bytes = %d", n)
	}
}
