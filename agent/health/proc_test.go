package health

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestParseProcFixtures(t *testing.T) {
	tests := []struct {
		dir                string
		wantCPU            float64
		cpuErr             bool
		wantTotal, wantUse uint64
		wantUptime         int64
		uptimeErr          bool
	}{
		{dir: "proc", wantCPU: 5668.0 * 100 / 9390, wantTotal: 1918300 * 1024, wantUse: (1918300 - 1024000) * 1024, wantUptime: 350735},
		{dir: "proc-old", cpuErr: true, wantTotal: 262144 * 1024, wantUse: (262144 - 65536) * 1024, uptimeErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			buf := make([]byte, 0, 16) // small: readInto must grow it
			var err error
			buf, err = readInto(filepath.Join("testdata", tt.dir, "stat"), buf)
			if err != nil {
				t.Fatal(err)
			}
			ct, err := parseStat(buf)
			if tt.cpuErr != (err != nil) {
				t.Fatalf("parseStat error = %v, want error %v", err, tt.cpuErr)
			}
			if got := cpuPercent(cpuTimes{}, ct); !tt.cpuErr && math.Abs(got-tt.wantCPU) > 1e-9 {
				t.Errorf("cpu since boot = %v, want %v", got, tt.wantCPU)
			}
			buf, err = readInto(filepath.Join("testdata", tt.dir, "meminfo"), buf)
			if err != nil {
				t.Fatal(err)
			}
			total, used, err := parseMeminfo(buf)
			if err != nil || total != tt.wantTotal || used != tt.wantUse {
				t.Errorf("parseMeminfo = %d, %d, %v; want %d, %d", total, used, err, tt.wantTotal, tt.wantUse)
			}
			buf, err = readInto(filepath.Join("testdata", tt.dir, "uptime"), buf)
			if err != nil {
				t.Fatal(err)
			}
			up, err := parseUptime(buf)
			if tt.uptimeErr != (err != nil) || up != tt.wantUptime {
				t.Errorf("parseUptime = %d, %v; want %d (error %v)", up, err, tt.wantUptime, tt.uptimeErr)
			}
		})
	}
}

func TestCPUPercentDelta(t *testing.T) {
	tests := []struct {
		name      string
		prev, cur cpuTimes
		want      float64
	}{
		{"half busy", cpuTimes{idle: 100, total: 200}, cpuTimes{idle: 150, total: 300}, 50},
		{"idle", cpuTimes{idle: 100, total: 200}, cpuTimes{idle: 200, total: 300}, 0},
		{"no ticks", cpuTimes{idle: 100, total: 200}, cpuTimes{idle: 100, total: 200}, 0},
		{"counter reset", cpuTimes{idle: 100, total: 200}, cpuTimes{idle: 1, total: 2}, 0},
	}
	for _, tt := range tests {
		if got := cpuPercent(tt.prev, tt.cur); got != tt.want {
			t.Errorf("%s: cpuPercent = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := parseStat([]byte("intr 1 2 3\n")); err == nil {
		t.Error("parseStat accepted a file without the cpu line")
	}
	if _, err := parseStat([]byte("cpu  1 x 3 4\n")); err == nil {
		t.Error("parseStat accepted a non-number")
	}
	if _, _, err := parseMeminfo([]byte("MemFree: 10 kB\n")); err == nil {
		t.Error("parseMeminfo accepted a file without MemTotal")
	}
	if _, err := readInto(filepath.Join(t.TempDir(), "missing"), nil); !os.IsNotExist(err) {
		t.Errorf("readInto(missing) = %v", err)
	}
}

func TestReadAndParseAllocations(t *testing.T) {
	buf := make([]byte, 0, 4096)
	stat := filepath.Join("testdata", "proc", "stat")
	mem := filepath.Join("testdata", "proc", "meminfo")
	allocs := testing.AllocsPerRun(50, func() {
		buf, _ = readInto(stat, buf)
		_, _ = parseStat(buf)
		buf, _ = readInto(mem, buf)
		_, _, _ = parseMeminfo(buf)
	})
	// Opening a file costs a few allocations (the *os.File, its name);
	// parsing must add none.
	if allocs > 8 {
		t.Errorf("reading and parsing /proc allocates %v times per report, want at most 8", allocs)
	}
}
