package mqttclient

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	highest := func(n int64) int64 { return n - 1 }
	lowest := func(int64) int64 { return 0 }
	b := Backoff{Min: time.Second, Max: 60 * time.Second}
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		randN   func(int64) int64
		want    time.Duration
	}{
		{"first ceiling is Min", b, 0, highest, time.Second},
		{"doubles", b, 1, highest, 2 * time.Second},
		{"doubles again", b, 3, highest, 8 * time.Second},
		{"capped at Max", b, 6, highest, 60 * time.Second},
		{"stays capped", b, 1000, highest, 60 * time.Second},
		{"full jitter reaches zero", b, 5, lowest, 0},
		{"defaults", Backoff{}, 10, highest, 60 * time.Second},
		{"default min", Backoff{}, 0, highest, time.Second},
		{"max below min", Backoff{Min: 5 * time.Second, Max: time.Second}, 3, highest, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.attempt, tt.randN); got != tt.want {
				t.Errorf("Delay(%d) = %s, want %s", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffDelayRandomWithinCeiling(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	for attempt := range 10 {
		ceiling := min(b.Min<<attempt, b.Max)
		for range 100 {
			if d := b.Delay(attempt, nil); d < 0 || d > ceiling {
				t.Fatalf("Delay(%d) = %s, outside [0, %s]", attempt, d, ceiling)
			}
		}
	}
}
