package cdf

import (
	"bytes"
	"fmt"
	"time"
)

// TimeLayout is JavaScript's toISOString format, which CDF clients expect:
// UTC with exactly three fractional digits.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Time is a timestamp on the CDF wire: millisecond UTC, and null when unset
// (CDF serialises never-set timestamps as null rather than omitting them).
type Time struct{ time.Time }

// At wraps t, truncated to milliseconds.
func At(t time.Time) Time { return Time{t.UTC().Truncate(time.Millisecond)} }

// Now is the current time as a CDF timestamp.
func Now() Time { return At(time.Now()) }

// TimePtr returns a pointer to At(t), or nil when t is zero; for fields that
// are omitted (not null) when unset.
func TimePtr(t time.Time) *Time {
	if t.IsZero() {
		return nil
	}
	v := At(t)
	return &v
}

// String formats the time in the wire layout, or "" when zero.
func (t Time) String() string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeLayout)
}

// MarshalJSON writes null for the zero time.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON accepts null or an RFC 3339 timestamp.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*t = Time{}
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("timestamp must be a string, got %s", b)
	}
	v, err := time.Parse(time.RFC3339Nano, string(b[1:len(b)-1]))
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	*t = At(v)
	return nil
}
