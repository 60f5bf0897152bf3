package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1 // 1..100 ms
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
		wantP50 time.Duration
		wantP99 time.Duration
		wantMax time.Duration
	}{
		{name: "one sample", samples: ms(7), p: 99, want: 7 * time.Millisecond, wantP50: 7 * time.Millisecond, wantP99: 7 * time.Millisecond, wantMax: 7 * time.Millisecond},
		{name: "1 to 100 ms", samples: ms(hundred...), p: 99, want: 99 * time.Millisecond, wantP50: 50 * time.Millisecond, wantP99: 99 * time.Millisecond, wantMax: 100 * time.Millisecond},
		{name: "unsorted, one outlier", samples: ms(5, 1, 900, 3, 2, 4, 6, 8, 7, 9), p: 90, want: 9 * time.Millisecond, wantP50: 5 * time.Millisecond, wantP99: 900 * time.Millisecond, wantMax: 900 * time.Millisecond},
		{name: "p0 is the smallest", samples: ms(3, 2, 1), p: 0, want: time.Millisecond, wantP50: 2 * time.Millisecond, wantP99: 3 * time.Millisecond, wantMax: 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := summarise(tt.samples, 2)
			if l.N != len(tt.samples) || l.Errors != 2 {
				t.Errorf("N, Errors = %d, %d; want %d, 2", l.N, l.Errors, len(tt.samples))
			}
			if l.P50 != tt.wantP50 || l.P99 != tt.wantP99 || l.Max != tt.wantMax {
				t.Errorf("p50, p99, max = %s, %s, %s; want %s, %s, %s", l.P50, l.P99, l.Max, tt.wantP50, tt.wantP99, tt.wantMax)
			}
			if got := percentile(slices.Sorted(slices.Values(tt.samples)), tt.p); got != tt.want {
				t.Errorf("p%v = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
	if l := summarise(nil, 3); l.N != 0 || l.P99 != 0 || l.Errors != 3 {
		t.Errorf("no samples: %+v", l)
	}
}

func TestSummariseLeavesSamplesAlone(t *testing.T) {
	s := []time.Duration{3, 1, 2}
	summarise(s, 0)
	if s[0] != 3 || s[1] != 1 || s[2] != 2 {
		t.Fatalf("summarise reordered its input: %v", s)
	}
}

func TestTargetVerdict(t *testing.T) {
	tests := []struct {
		target target
		ratio  float64
		want   string
	}{
		{targetP1, 0.5, "met"},
		{targetP1, 0.49, "**not met**"},
		{targetP1, 1.7, "met"},
		{targetP3, 3, "met"},
		{targetP3, 3.01, "**not met**"},
		{targetP4, 1.2, "met"},
		{targetP4, math.NaN(), "not measured"},
	}
	for _, tt := range tests {
		if got := tt.target.verdict(tt.ratio); got != tt.want {
			t.Errorf("%s verdict(%v) = %q, want %q", tt.target, tt.ratio, got, tt.want)
		}
	}
	if got := targetP1.String(); got != "≥ 0.5×" {
		t.Errorf("targetP1 = %q", got)
	}
	if got := targetP3.String(); got != "≤ 3×" {
		t.Errorf("targetP3 = %q", got)
	}
	if r := ratio(1, 0); !math.IsNaN(r) {
		t.Errorf("ratio(1, 0) = %v, want NaN", r)
	}
	if r := ratio(3, 4); r != 0.75 {
		t.Errorf("ratio(3, 4) = %v", r)
	}
}

func TestParseConfigs(t *testing.T) {
	tests := []struct {
		in      string
		want    []config
		wantErr bool
	}{
		{in: "sqlite-1,postgres-1,postgres-3", want: []config{
			{Name: "sqlite-1", Replicas: 1},
			{Name: "postgres-1", Postgres: true, Replicas: 1},
			{Name: "postgres-3", Postgres: true, Replicas: 3, Mosquitto: true},
		}},
		{in: " postgres-2 ,", want: []config{{Name: "postgres-2", Postgres: true, Replicas: 2, Mosquitto: true}}},
		{in: "postgres-3-api2", want: []config{{Name: "postgres-3-api2", Postgres: true, Replicas: 3, Mosquitto: true, APIOnly: 2}}},
		{in: "postgres-3-api3", wantErr: true},
		{in: "postgres-3-api0", wantErr: true},
		{in: "postgres-3-x2", wantErr: true},
		{in: "postgres-3-api2-x", wantErr: true},
		{in: "sqlite-1-api1", wantErr: true},
		{in: "sqlite-3", wantErr: true},
		{in: "mysql-1", wantErr: true},
		{in: "postgres", wantErr: true},
		{in: "postgres-0", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseConfigs(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseConfigs(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseConfigs(%q) = %+v, want %+v", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("parseConfigs(%q)[%d] = %+v, want %+v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

// TestSummariseBefore checks that only the probe requests sent before a
// phase's end count, failed ones as errors.
func TestSummariseBefore(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	samples := []sample{
		{At: t0, D: 1 * ms, OK: true},
		{At: t0.Add(10 * ms), D: 3 * ms, OK: true},
		{At: t0.Add(20 * ms), D: 50 * ms, OK: false},
		{At: t0.Add(30 * ms), D: 90 * ms, OK: true}, // sent at the end: not load
		{At: t0.Add(40 * ms), D: 2 * ms, OK: false},
	}
	got := summariseBefore(samples, t0.Add(30*ms))
	want := latencies{N: 2, Errors: 1, P50: 1 * ms, P99: 3 * ms, Max: 3 * ms}
	if got != want {
		t.Fatalf("summariseBefore = %+v, want %+v", got, want)
	}
}
