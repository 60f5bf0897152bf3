package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/report.md from the current output")

// sampleResults are two configurations' made-up figures: one meeting every
// target, one missing them and ending with an error.
func sampleResults() (header, []result) {
	h := header{Command: "go run ./bench/fleetbench -cores 500 -agents 100", Started: time.Date(2026, 11, 30, 1, 26, 0, 0, time.UTC),
		Elapsed: 95 * time.Second, Machine: "CPU: test; nproc: 2", Interval: 20 * time.Millisecond, Idle: 20 * time.Second, Health: 30 * time.Second}
	good := result{Config: config{Name: "sqlite-1", Replicas: 1}, Cores: 500, P1Elapsed: 10 * time.Second, P1Rate: 50, CryptoBefore: 70, CryptoAfter: 90,
		IdleCore: latencies{N: 100, P50: time.Millisecond, P99: 4 * time.Millisecond}, LoadCore: latencies{N: 300, P50: 2 * time.Millisecond, P99: 8 * time.Millisecond},
		IdleSummary: latencies{N: 100, P50: time.Millisecond, P99: 5 * time.Millisecond}, LoadSummary: latencies{N: 300, P50: time.Millisecond, P99: 15 * time.Millisecond},
		Agents: 100, ApplyDelay: time.Second, P4Elapsed: 1500 * time.Millisecond, P4Notify: 300 * time.Millisecond, P4Received: 100, P4Status: "Success",
		BoundElapsed: time.Second, BoundNotify: 30 * time.Millisecond, LoadAvgBefore: "1.00, 1.00, 1.00", LoadAvgAfter: "2.00, 1.50, 1.00",
		P5:          ingestResult{Reports: 2000, Acked: time.Second, Stored: 1200 * time.Millisecond, Expected: 2040, Handled: 2040, RSSBefore: 100 << 20, RSSMax: 150 << 20, RSSAfter: 120 << 20},
		P5Embedded:  ingestResult{Reports: 2000, Acked: 500 * time.Millisecond},
		P5Mosquitto: ingestResult{Reports: 2000, Acked: 800 * time.Millisecond},
		P7:          stormResult{Agents: 200, Rate: 1200, Wall: 167 * time.Millisecond, TLSRate: 2000, TLSWall: 100 * time.Millisecond}}
	bad := result{Config: config{Name: "postgres-3-api2", Postgres: true, Replicas: 3, Mosquitto: true, APIOnly: 2}, Err: errors.New("P4 bound: mosquitto\nexited"),
		Cores: 500, Failed: 2, P1Elapsed: 100 * time.Second, P1Rate: 5, CryptoBefore: 2000,
		IdleCore: latencies{N: 100, P50: time.Millisecond, P99: 4 * time.Millisecond}, LoadCore: latencies{N: 30, Errors: 1, P50: 20 * time.Millisecond, P99: 400 * time.Millisecond},
		IdleSummary: latencies{N: 100, P50: time.Millisecond, P99: 5 * time.Millisecond}, LoadSummary: latencies{N: 30, P50: 10 * time.Millisecond, P99: 100 * time.Millisecond},
		Agents: 100, ApplyDelay: time.Second, P4Elapsed: 6 * time.Second, P4Notify: 4 * time.Second, P4Received: 99, P4Status: "Success",
		LoadAvgBefore: "9.00, 9.00, 9.00", LoadAvgAfter: "12.00, 10.00, 9.00"}
	return h, []result{good, bad}
}

func TestMarkdownGolden(t *testing.T) {
	h, results := sampleResults()
	got := markdown(h, results)
	golden := filepath.Join("testdata", "report.md")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./bench/fleetbench -run TestMarkdownGolden -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("report differs from %s (rerun with -update if the change is intended):\n%s", golden, got)
	}
}

func TestMarkdownVerdicts(t *testing.T) {
	h, results := sampleResults()
	md := markdown(h, results)
	lines := strings.Split(md, "\n")
	row := func(prefix string) string {
		t.Helper()
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting %q in:\n%s", prefix, md)
		return ""
	}
	// sqlite-1: 50/80 = 0.62 ≥ 0.5; 8/4 = 2 ≤ 3; 15/5 = 3 ≤ 3; 1.5/1 ≤ 2; 300 ms ≤ 1 s;
	// P5 4000/2500 = 1.6 ≥ 1; 1667/2500 = 0.67 ≥ 0.5; P7 1200/2000 = 0.6 ≥ 0.5, 1200/500 = 2.4 ≥ 2.
	if got, want := row("| sqlite-1 |"), "| sqlite-1 | 0.62× met | 2.00× met | 3.00× met | 1.50× met | 300ms met | 1.60× met | 0.67× met | 0.60× met | 2.40× met |"; got != want {
		t.Errorf("summary row\n got %s\nwant %s", got, want)
	}
	// postgres-3-api2: 5/2000; 400/4; 100/5; no bound; 99 of 100 agents notified; no P5.
	if got, want := row("| postgres-3-api2 |"), "| postgres-3-api2 | 0.003× **not met** | 100.00× **not met** | 20.00× **not met** | – not measured | 4s **not met** | – not measured | – not measured | – not measured | – not measured |"; got != want {
		t.Errorf("summary row\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(md, "**The run failed:** P4 bound: mosquitto exited") {
		t.Errorf("the failed configuration's error is not reported on one line:\n%s", md)
	}
}

func TestNotifyVerdict(t *testing.T) {
	tests := []struct {
		name string
		r    result
		want string
	}{
		{"all within 1 s", result{Agents: 10, P4Received: 10, P4Notify: time.Second}, "met"},
		{"late", result{Agents: 10, P4Received: 10, P4Notify: 1001 * time.Millisecond}, "**not met**"},
		{"one missing", result{Agents: 10, P4Received: 9, P4Notify: 10 * time.Millisecond}, "**not met**"},
		{"not run", result{Agents: 10}, "not measured"},
	}
	for _, tt := range tests {
		if got := tt.r.notifyVerdict(); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestP5NotMeasured: with the agents on Mosquitto the embedded broker alone
// is not measured, and its ratio must say so instead of 0×.
func TestP5NotMeasured(t *testing.T) {
	r := result{P5: ingestResult{Reports: 100, Stored: time.Second}, P5Mosquitto: ingestResult{Reports: 100, Acked: time.Second}}
	if got := cell(r.p5BrokerRatio(), targetP5Broker); got != "– not measured" {
		t.Errorf("embedded broker alone not run: %q", got)
	}
	if got := cell(r.p5IngestRatio(), targetP5Ingest); got != "1.00× met" {
		t.Errorf("ingest ratio: %q", got)
	}
}

func TestHandledVerdict(t *testing.T) {
	for _, tt := range []struct {
		expected, handled int64
		want              string
	}{{0, 0, "not measured"}, {20000, 20000, "met"}, {20000, 20003, "met"}, {20000, 11551, "**not met**"}} {
		if got := (result{P5: ingestResult{Expected: tt.expected, Handled: tt.handled}}).handledVerdict(); got != tt.want {
			t.Errorf("%d of %d handled: %q, want %q", tt.handled, tt.expected, got, tt.want)
		}
	}
}
