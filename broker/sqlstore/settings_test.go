package sqlstore

import (
	"context"
	"testing"
)

func TestSettings(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	if _, ok, err := db.Setting(ctx, "k"); err != nil || ok {
		t.Fatalf("unset setting: ok=%v err=%v", ok, err)
	}
	if v, err := db.InitSetting(ctx, "k", "first"); err != nil || v != "first" {
		t.Fatalf("InitSetting = %q, %v; want first", v, err)
	}
	if v, err := db.InitSetting(ctx, "k", "second"); err != nil || v != "first" {
		t.Fatalf("second InitSetting = %q, %v; want the first value kept", v, err)
	}
	if v, ok, err := db.Setting(ctx, "k"); err != nil || !ok || v != "first" {
		t.Fatalf("Setting = %q %v %v", v, ok, err)
	}
}

func TestPutSetting(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	for _, v := range []string{"one", "two"} {
		if err := db.PutSetting(ctx, "k", v); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := db.Setting(ctx, "k"); err != nil || !ok || got != v {
			t.Fatalf("after PutSetting(%q): Setting = %q %v %v", v, got, ok, err)
		}
	}
}
