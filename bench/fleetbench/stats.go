package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// latencies summarises one endpoint's response times in one phase.
type latencies struct {
	N        int
	Errors   int // requests that failed or answered other than 200
	P50, P99 time.Duration
	Max      time.Duration
}

// summarise computes the nearest-rank percentiles of samples; errors is
// carried through.
func summarise(samples []time.Duration, errors int) latencies {
	l := latencies{N: len(samples), Errors: errors}
	if len(samples) == 0 {
		return l
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	l.P50, l.P99, l.Max = percentile(s, 50), percentile(s, 99), s[len(s)-1]
	return l
}

// percentile is the nearest-rank p-th percentile of sorted (ascending,
// non-empty): the smallest sample with at least p% of the samples at or
// below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// ratio is a/b, or NaN when b is zero (nothing to compare with).
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// target is a figure's goal: the ratio must be at least (or at most) Bound.
type target struct {
	AtLeast bool
	Bound   float64
}

// String is the target as BENCHMARKS.md writes it, e.g. "≥ 0.5×".
func (t target) String() string {
	op := "≤"
	if t.AtLeast {
		op = "≥"
	}
	return op + " " + strconv.FormatFloat(t.Bound, 'f', -1, 64) + "×"
}

// verdict says whether r meets t; a figure that could not be measured
// (NaN) is "not measured".
func (t target) verdict(r float64) string {
	switch {
	case math.IsNaN(r):
		return "not measured"
	case t.AtLeast && r >= t.Bound, !t.AtLeast && r <= t.Bound:
		return "met"
	}
	return "**not met**"
}

// config is one deployment of ggfleet under test.
type config struct {
	Name      string // as given to -configs, e.g. "postgres-3"
	Postgres  bool
	Replicas  int
	Mosquitto bool // agents connect to one shared Mosquitto instead of the embedded broker
	// APIOnly is how many of the replicas (the last ones) run with
	// --workers 0: they take every API call of P1 and P3 (the tier
	// behind the load balancer) and leave the batches to the others.
	APIOnly int
}

// parseConfigs reads -configs: a comma-separated list of
// DATABASE-REPLICAS[-apiN] where DATABASE is sqlite or postgres. SQLite runs
// one replica only (its data dir is locked). More than one replica uses
// Mosquitto: each replica's embedded MQTT broker reaches only the agents
// connected to it. -apiN (PostgreSQL, fewer than REPLICAS) makes the last N
// replicas API-only (--workers 0).
func parseConfigs(s string) ([]config, error) {
	var out []config
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		parts := strings.Split(f, "-")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("-configs: %q is not DATABASE-REPLICAS[-apiN] (e.g. sqlite-1, postgres-3, postgres-3-api2)", f)
		}
		db := parts[0]
		replicas, err := strconv.Atoi(parts[1])
		if err != nil || replicas < 1 {
			return nil, fmt.Errorf("-configs: %q is not DATABASE-REPLICAS[-apiN] (e.g. sqlite-1, postgres-3, postgres-3-api2)", f)
		}
		apiOnly := 0
		if len(parts) == 3 {
			n, ok := strings.CutPrefix(parts[2], "api")
			if apiOnly, err = strconv.Atoi(n); !ok || err != nil || apiOnly < 1 || apiOnly >= replicas {
				return nil, fmt.Errorf("-configs: %q: -apiN makes N of the replicas API-only, 1 ≤ N < REPLICAS (one at least works the batches)", f)
			}
		}
		c := config{Name: f, Replicas: replicas, Mosquitto: replicas > 1, APIOnly: apiOnly}
		switch db {
		case "sqlite":
			if replicas != 1 {
				return nil, fmt.Errorf("-configs: %q: SQLite runs one replica only", f)
			}
		case "postgres":
			c.Postgres = true
		default:
			return nil, fmt.Errorf("-configs: %q: the database is sqlite or postgres, not %q", f, db)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-configs names no configuration")
	}
	return out, nil
}
