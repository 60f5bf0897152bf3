package sqlstore

import (
	"bytes"
	"context"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestArtifactStore(t *testing.T) {
	ctx := context.Background()
	s := newTestDB(t).Artifacts()
	if _, err := s.GetArtifact(ctx, "a/b.zip"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("missing artifact: err = %v, want NotFound", err)
	}
	zipish := []byte{0x50, 0x4b, 0x03, 0x04, 0x00, 0xff, 0x00}
	for _, data := range [][]byte{zipish, []byte("replaced"), {}} {
		if err := s.PutArtifact(ctx, "a/b.zip", data); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetArtifact(ctx, "a/b.zip")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("artifact = %x, want %x", got, data)
		}
	}
}
