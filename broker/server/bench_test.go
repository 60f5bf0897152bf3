package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// BenchmarkCoreTask measures issue 8's P1 in-process: one `POST /coreTasks`
// of b.N cores (template ggfleet-core, MANUAL_INSTALL, as fleetbench submits
// them) on a broker with the local provider and SQLite, from the submission
// until every item is final. It reports cores/s and the process's CPU time
// per core (user+system, so it includes the polling client's small share).
// Run it with a fixed count, e.g.
//
//	go test ./broker/server -run '^$' -bench CoreTask -benchtime 1000x -cpuprofile cpu.out
func BenchmarkCoreTask(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := b.TempDir()
	listen, mqtt := benchFreeAddr(b), benchFreeAddr(b)
	cfg := Config{
		DataDir: filepath.Join(dir, "data"), Listen: listen, MQTTListen: mqtt, Provider: "local",
		MaxBodyBytes: 64 << 20, Workers: 4, ShutdownTimeout: 20 * time.Second, DeploymentTimeout: 10 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	srvCtx, srvStop := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- Run(srvCtx, cfg) }()
	defer func() {
		srvStop()
		if err := <-srvDone; err != nil {
			b.Errorf("server: %v", err)
		}
	}()
	api := benchClient(ctx, b, "http://"+listen, filepath.Join(cfg.DataDir, "admin.token"), srvDone)

	cores := make([]cdf.NewCore, b.N)
	for i := range cores {
		name := fmt.Sprintf("bench-core-%06d", i)
		cores[i] = cdf.NewCore{Name: name, ProvisioningTemplate: "ggfleet-core",
			ProvisioningParameters: map[string]string{"ThingName": name}, ConfigFileGenerator: "MANUAL_INSTALL"}
	}
	if os.Getenv("GOGC") == "" { // as `ggfleet serve` does
		defer debug.SetGCPercent(debug.SetGCPercent(GCPercent))
	}
	cpu0 := benchCPU()
	b.ResetTimer()
	start := time.Now()
	loc, err := api.Create(ctx, http.MethodPost, "/coreTasks", cdf.NewCoreTask{CoreVersion: "2.12.0", Type: "Create", Cores: cores})
	if err != nil {
		b.Fatal(err)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	failed := benchWait(ctx, b, api, id)
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := benchCPU() - cpu0
	if failed > 0 {
		b.Fatalf("%d of %d cores failed", failed, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cores/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/core")
}

// benchWait polls the task until every item is final and returns how many failed.
func benchWait(ctx context.Context, b *testing.B, api *apiclient.Client, id string) int {
	for {
		var t cdf.CoreTask
		if err := api.Do(ctx, http.MethodGet, "/coreTasks/"+id, nil, &t); err != nil {
			b.Fatal(err)
		}
		if t.TaskStatus == "Success" || t.TaskStatus == "Failure" {
			done, failed := 0, 0
			for _, it := range t.Cores {
				switch it.TaskStatus {
				case "Success":
					done++
				case "Failure":
					done, failed = done+1, failed+1
				}
			}
			if done == len(t.Cores) {
				return failed
			}
		}
		select { // GET /coreTasks/{id} of thousands of items is not free: poll gently
		case <-ctx.Done():
			b.Fatalf("task %s: %v", id, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// benchClient waits until the broker is ready and returns an API client with the admin token.
func benchClient(ctx context.Context, b *testing.B, base, tokenPath string, srvDone <-chan error) *apiclient.Client {
	hc := &http.Client{Timeout: time.Minute}
	for {
		select {
		case err := <-srvDone:
			b.Fatalf("broker exited early: %v", err)
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := hc.Get(base + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		tok, err := os.ReadFile(tokenPath)
		if err != nil {
			b.Fatalf("read admin token: %v", err)
		}
		api, err := apiclient.New(apiclient.Config{BaseURL: base, Token: strings.TrimSpace(string(tok)), HTTPClient: hc, UserAgent: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		return api
	}
}

func benchFreeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// benchCPU is the process's user+system CPU time so far.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
