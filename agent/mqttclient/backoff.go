package mqttclient

import (
	"math/rand/v2"
	"time"
)

// Backoff is the wait between connection attempts. A fleet of cores that
// lost the broker at the same moment must not all come back at once, so each
// wait is drawn at random between zero and a ceiling ("full jitter"); the
// ceiling starts at Min and doubles with every failed attempt up to Max.
type Backoff struct {
	Min time.Duration // first ceiling (default 1s)
	Max time.Duration // largest ceiling (default 60s)
}

// withDefaults fills zero fields and keeps Max ≥ Min.
func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 60 * time.Second
	}
	b.Max = max(b.Max, b.Min)
	return b
}

// Delay returns the wait before attempt number attempt (0 for the first
// retry). randN returns a uniform value in [0, n); nil means math/rand/v2.
func (b Backoff) Delay(attempt int, randN func(n int64) int64) time.Duration {
	b = b.withDefaults()
	if randN == nil {
		randN = rand.Int64N
	}
	ceiling := b.Min
	for i := 0; i < attempt && ceiling < b.Max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.Max)
	return time.Duration(randN(int64(ceiling) + 1))
}
