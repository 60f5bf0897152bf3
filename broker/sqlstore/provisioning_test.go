package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestProvisioningTemplateStore(t *testing.T) {
	ctx := context.Background()
	s := newTestDB(t)
	t0 := time.UnixMilli(1700000000123).UTC()
	t1 := t0.Add(time.Minute)
	doc := []byte("{\n  \"Resources\": {}\n}\n")

	if _, err := s.GetProvisioningTemplate(ctx, "a"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	if created, err := s.PutProvisioningTemplate(ctx, "a", doc, t0); err != nil || !created {
		t.Fatalf("Put new = %v, %v", created, err)
	}
	if created, err := s.CreateProvisioningTemplate(ctx, "a", []byte(`{"other":1}`), t1); err != nil || created {
		t.Fatalf("Create existing = %v, %v", created, err)
	}
	got, err := s.GetProvisioningTemplate(ctx, "a")
	if err != nil || string(got) != string(doc) {
		t.Fatalf("Get = %q, %v; want the document byte for byte", got, err)
	}
	if created, err := s.CreateProvisioningTemplate(ctx, "b", doc, t0); err != nil || !created {
		t.Fatalf("Create new = %v, %v", created, err)
	}
	replaced := []byte(`{"Resources":{"x":{}}}`)
	if created, err := s.PutProvisioningTemplate(ctx, "a", replaced, t1); err != nil || created {
		t.Fatalf("Put existing = %v, %v", created, err)
	}
	if got, _ := s.GetProvisioningTemplate(ctx, "a"); string(got) != string(replaced) {
		t.Fatalf("after replace Get = %q", got)
	}
	list, err := s.ListProvisioningTemplates(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if list[0].Name != "a" || !list[0].CreatedAt.Equal(t0) || !list[0].UpdatedAt.Equal(t1) {
		t.Errorf("list[0] = %+v", list[0])
	}
	if list[1].Name != "b" || !list[1].UpdatedAt.IsZero() {
		t.Errorf("list[1] = %+v, want never updated", list[1])
	}
	if err := s.DeleteProvisioningTemplate(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteProvisioningTemplate(ctx, "a"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("Delete again: %v", err)
	}
	if list, _ := s.ListProvisioningTemplates(ctx); len(list) != 1 {
		t.Fatalf("List after delete = %+v", list)
	}
}
