package sqlstore

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestTemplateStoreVersions(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	created := cdf.At(time.UnixMilli(1_642_143_491_157))
	v1 := cdf.Template{
		Name: "cams", Version: 1, CreatedAt: created,
		Components: []cdf.Component{{Key: "a.b", Version: "1.0.0", RunWith: &cdf.RunWith{PosixUser: "ggc_user"},
			ConfigurationUpdate: &cdf.ConfigurationUpdate{Merge: `{"x":1}`, Reset: []string{"/y"}}}},
		JobConfig: json.RawMessage(`{"timeoutConfig":{"inProgressTimeoutInMinutes":5}}`),
	}
	if err := db.CreateTemplate(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateTemplate(ctx, v1); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("second CreateTemplate: %v, want Conflict", err)
	}
	got, err := db.GetTemplate(ctx, "cams", 0)
	if err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(v1)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("stored\n%s\nwant\n%s", gotJSON, wantJSON)
	}

	updated := cdf.At(created.Add(time.Hour))
	v2, err := db.AddTemplateVersion(ctx, cdf.Template{Name: "cams", Components: []cdf.Component{{Key: "c.d", Version: "2.0.0"}}, UpdatedAt: updated})
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version != 2 || !v2.CreatedAt.Equal(created.Time) {
		t.Fatalf("v2 = %+v", v2)
	}
	latest, err := db.GetTemplate(ctx, "cams", 0)
	if err != nil || latest.Version != 2 || !latest.UpdatedAt.Equal(updated.Time) || latest.JobConfig != nil {
		t.Fatalf("latest = %+v, %v", latest, err)
	}
	if old, err := db.GetTemplate(ctx, "cams", 1); err != nil || old.Components[0].Key != "a.b" {
		t.Fatalf("version 1 = %+v, %v", old, err)
	}
	if _, err := db.GetTemplate(ctx, "cams", 3); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("version 3: %v, want NotFound", err)
	}
	if _, err := db.AddTemplateVersion(ctx, cdf.Template{Name: "nope"}); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("AddTemplateVersion of a missing template: %v, want NotFound", err)
	}

	if err := db.DeleteTemplate(ctx, "cams"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{0, 1, 2} {
		if _, err := db.GetTemplate(ctx, "cams", v); !errkind.Is(err, errkind.NotFound) {
			t.Fatalf("version %d after delete: %v, want NotFound", v, err)
		}
	}
	if list, more, err := db.ListTemplateVersions(ctx, "cams", 10, 0); err != nil || more || len(list) != 0 {
		t.Fatalf("versions after delete = %v %v %v", list, more, err)
	}
	if err := db.DeleteTemplate(ctx, "cams"); err != nil {
		t.Fatalf("deleting a missing template: %v", err)
	}
}
