package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestCoreStore(t *testing.T) {
	ctx := context.Background()
	s := newTestDB(t).Cores()
	now := time.UnixMilli(1700000000123).UTC()
	if err := s.EnsureCores(ctx, []string{"b", "a", "c", "d"}, now); err != nil {
		t.Fatal(err)
	}
	r, err := s.GetCore(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if r.DesiredName != "None" || r.ReportedName != "None" || r.DeploymentStatus != "None" || !r.CreatedAt.Equal(now) || !r.UpdatedAt.IsZero() {
		t.Fatalf("new core = %+v", r)
	}
	// Template state written by deployments survives EnsureCores.
	for _, q := range []string{
		`UPDATE cores SET desired_name='T', desired_version=2 WHERE name IN ('b','c')`,
		`UPDATE cores SET deployment_status='FAILED_ROLLBACK_COMPLETE' WHERE name IN ('c','d')`,
	} {
		if _, err := s.d.sql.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EnsureCores(ctx, []string{"b", "e"}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.GetCore(ctx, "b"); r.DesiredName != "T" || r.DesiredVersion != 2 || !r.CreatedAt.Equal(now) {
		t.Fatalf("EnsureCores overwrote b: %+v", r)
	}
	v2, v1 := 2, 1
	tests := []struct {
		name  string
		f     corestore.Filter
		after string
		count int
		want  []string
		more  bool
	}{
		{"all", corestore.Filter{}, "", 10, []string{"a", "b", "c", "d", "e"}, false},
		{"page", corestore.Filter{}, "a", 2, []string{"b", "c"}, true},
		{"template", corestore.Filter{TemplateName: "T"}, "", 10, []string{"b", "c"}, false},
		{"template version", corestore.Filter{TemplateName: "T", TemplateVersion: &v2}, "", 10, []string{"b", "c"}, false},
		{"other version", corestore.Filter{TemplateName: "T", TemplateVersion: &v1}, "", 10, []string{}, false},
		{"version without name", corestore.Filter{TemplateVersion: &v2}, "", 10, []string{}, false},
		{"failed", corestore.Filter{FailedOnly: true}, "", 10, []string{"c", "d"}, false},
		{"failed of template", corestore.Filter{FailedOnly: true, TemplateName: "T"}, "", 10, []string{"c"}, false},
		{"failed of version", corestore.Filter{FailedOnly: true, TemplateName: "T", TemplateVersion: &v1}, "", 10, []string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more, err := s.ListCores(ctx, tt.f, tt.count, tt.after)
			if err != nil {
				t.Fatal(err)
			}
			names := []string{}
			for _, r := range got {
				names = append(names, r.Name)
			}
			if more != tt.more || len(names) != len(tt.want) {
				t.Fatalf("ListCores = %v more=%v, want %v more=%v", names, more, tt.want, tt.more)
			}
			for i := range names {
				if names[i] != tt.want[i] {
					t.Fatalf("ListCores = %v, want %v", names, tt.want)
				}
			}
		})
	}

	a := corestore.ArtifactRecord{Core: "a", Kind: "certs", Bucket: "local", Key: "k1", CreatedAt: now}
	if err := s.PutArtifact(ctx, a); err != nil {
		t.Fatal(err)
	}
	a.Key = "k2"
	if err := s.PutArtifact(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutArtifact(ctx, corestore.ArtifactRecord{Core: "a", Kind: "config", Bucket: "local", Key: "k3", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	arts, err := s.ListArtifacts(ctx, "a")
	if err != nil || len(arts) != 2 || arts[0].Key != "k2" || arts[1].Kind != "config" || !arts[0].CreatedAt.Equal(now) {
		t.Fatalf("ListArtifacts = %+v, %v", arts, err)
	}
	if err := s.DeleteCore(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCore(ctx, "a"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetCore after delete = %v", err)
	}
	if arts, _ := s.ListArtifacts(ctx, "a"); len(arts) != 0 {
		t.Fatalf("artifacts survive the core: %+v", arts)
	}
	if err := s.DeleteCore(ctx, "a"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("second DeleteCore = %v, want NotFound", err)
	}
}

func TestDeviceStore(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	s := db.Devices()
	now := time.UnixMilli(1700000000123).UTC()
	if err := db.Cores().EnsureCores(ctx, []string{"core"}, now); err != nil {
		t.Fatal(err)
	}
	for core, want := range map[string]bool{"core": true, "nope": false} {
		if got, err := s.CoreExists(ctx, core); err != nil || got != want {
			t.Fatalf("CoreExists(%s) = %v, %v", core, got, err)
		}
	}
	if err := s.PutDevices(ctx, "core", []string{"d2", "d1"}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevices(ctx, "other", []string{"d3"}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordCerts(ctx, "core", "d1", "local", "greengrass2/artifacts/d1/d1/certs.zip", now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d, err := s.GetDevice(ctx, "d1"); err != nil || d.CertsBucket != "local" || !d.CertsCreatedAt.Equal(now) || !d.CreatedAt.Equal(now) {
		t.Fatalf("d1 after RecordCerts = %+v, %v; want its certs, its createdAt kept", d, err)
	}
	if err := s.RecordCerts(ctx, "core", "gone", "b", "k", now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d, err := s.GetDevice(ctx, "gone"); err != nil || d.CoreName != "core" || d.CertsKey != "k" || !d.CreatedAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("device without a record after RecordCerts = %+v, %v; want a record linked to core with its certs", d, err)
	}
	if err := s.DeleteDevice(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Minute)
	if err := s.PutDevices(ctx, "other", []string{"d1"}, later); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDevice(ctx, "d1")
	if err != nil || d.CoreName != "other" || d.CertsKey == "" || !d.CreatedAt.Equal(now) || !d.UpdatedAt.Equal(later) {
		t.Fatalf("re-linked d1 = %+v, %v", d, err)
	}
	list, more, err := s.ListDevices(ctx, "other", 1, "")
	if err != nil || !more || len(list) != 1 || list[0].Name != "d1" {
		t.Fatalf("ListDevices(other) = %+v, %v, %v", list, more, err)
	}
	list, more, err = s.ListDevices(ctx, "", 10, "d1")
	if err != nil || more || len(list) != 2 || list[0].Name != "d2" {
		t.Fatalf("ListDevices(all after d1) = %+v, %v, %v", list, more, err)
	}
	if err := s.DeleteDevice(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx, "d1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("second DeleteDevice = %v, want NotFound", err)
	}
	if _, err := s.GetDevice(ctx, "d1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetDevice after delete = %v", err)
	}
}
