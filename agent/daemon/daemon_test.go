package daemon

import (
	"context"
	"runtime/debug"
	"testing"
	"testing/synctest"
	"time"
)

func TestTuneMemoryRespectsGOGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })

	t.Setenv("GOGC", "")
	tuneMemory()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("GC percent without GOGC = %d, want %d", got, defaultGCPercent)
	}
	t.Setenv("GOGC", "200")
	tuneMemory()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent with GOGC set = %d, want it left alone (100)", got)
	}
}

func TestReturnMemoryStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- returnMemory(ctx, time.Minute) }()
		time.Sleep(3 * time.Minute) // three periods pass in the bubble
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
