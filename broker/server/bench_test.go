package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for GGFLEET_BENCH_POSTGRES

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
	api := benchBroker(ctx, b)
	cores := make([]cdf.NewCore, b.N)
	for i := range cores {
		name := fmt.Sprintf("bench-core-%06d", i)
		cores[i] = cdf.NewCore{Name: name, ProvisioningTemplate: "ggfleet-core",
			ProvisioningParameters: map[string]string{"ThingName": name}, ConfigFileGenerator: "MANUAL_INSTALL"}
	}
	benchTask(ctx, b, api, "/coreTasks", cdf.NewCoreTask{CoreVersion: "2.12.0", Type: "Create", Cores: cores}, "cores")
}

// BenchmarkDeviceTask is BenchmarkCoreTask for client devices: one
// `POST /cores/{name}/deviceTasks` of b.N devices (template
// ggfleet-client-device) for an enrolled core, from the submission until
// every item is final. b.N is at most devices.MaxDevices (10,000).
func BenchmarkDeviceTask(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	api := benchBroker(ctx, b)
	const core = "bench-core"
	loc, err := api.Create(ctx, http.MethodPost, "/coreTasks", cdf.NewCoreTask{CoreVersion: "2.12.0", Type: "Create",
		Cores: []cdf.NewCore{{Name: core, ProvisioningTemplate: "ggfleet-core", ProvisioningParameters: map[string]string{"ThingName": core}}}})
	if err != nil {
		b.Fatal(err)
	}
	if failed := benchWait(ctx, b, api, loc); failed > 0 {
		b.Fatalf("core %s failed", core)
	}
	benchEnroll(ctx, b, api, core)
	devices := make([]cdf.NewDevice, b.N)
	for i := range devices {
		name := fmt.Sprintf("bench-device-%06d", i)
		devices[i] = cdf.NewDevice{Name: name, ProvisioningTemplate: "ggfleet-client-device",
			ProvisioningParameters: map[string]string{"ThingName": name}}
	}
	benchTask(ctx, b, api, "/cores/"+core+"/deviceTasks", cdf.NewDeviceTask{Type: "Create", Devices: devices}, "devices")
}

// benchBroker runs `ggfleet serve` in-process (local provider, the GC
// setting serve uses) until the benchmark ends and returns an admin API
// client. Its database is SQLite, or a fresh PostgreSQL database on the
// server GGFLEET_BENCH_POSTGRES names (a postgres:// URL), dropped at the
// end.
func benchBroker(ctx context.Context, b *testing.B) *apiclient.Client {
	b.Helper()
	dir := b.TempDir()
	listen, mqtt := benchFreeAddr(b), benchFreeAddr(b)
	cfg := Config{
		DataDir: filepath.Join(dir, "data"), Listen: listen, MQTTListen: mqtt, Provider: "local",
		MaxBodyBytes: 64 << 20, Workers: 4, ShutdownTimeout: 20 * time.Second, DeploymentTimeout: 10 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if server := os.Getenv("GGFLEET_BENCH_POSTGRES"); server != "" {
		cfg.DatabaseURL = benchPostgres(ctx, b, server)
		cfg.SecretsKeyFile = filepath.Join(dir, "secrets.key") // created on first start
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	srvCtx, srvStop := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- Run(srvCtx, cfg) }()
	b.Cleanup(func() {
		srvStop()
		if err := <-srvDone; err != nil {
			b.Errorf("server: %v", err)
		}
	})
	if os.Getenv("GOGC") == "" { // as `ggfleet serve` does
		old := debug.SetGCPercent(GCPercent)
		b.Cleanup(func() { debug.SetGCPercent(old) })
	}
	return benchClient(ctx, b, "http://"+listen, filepath.Join(cfg.DataDir, "admin.token"), srvDone)
}

// benchPostgres creates a database of its own on the PostgreSQL server at
// url, drops it when the benchmark ends, and returns its URL.
func benchPostgres(ctx context.Context, b *testing.B, url string) string {
	b.Helper()
	admin, err := sql.Open("pgx", url)
	if err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("ggfleet_bench_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		b.Fatalf("create database on %s: %v", url, err)
	}
	b.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			b.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := neturl.Parse(url)
	if err != nil {
		b.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// benchTask times one task of b.N items: the POST to path, then polling
// until every item is final. It reports <unit>/s and the process's CPU
// time per item.
func benchTask(ctx context.Context, b *testing.B, api *apiclient.Client, path string, body any, unit string) {
	b.Helper()
	cpu0 := benchCPU()
	b.ResetTimer()
	start := time.Now()
	loc, err := api.Create(ctx, http.MethodPost, path, body)
	if err != nil {
		b.Fatal(err)
	}
	failed := benchWait(ctx, b, api, loc)
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := benchCPU() - cpu0
	if failed > 0 {
		b.Fatalf("%d of %d %s failed", failed, b.N, unit)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), unit+"/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/"+strings.TrimSuffix(unit, "s"))
}

// benchEnroll enrolls core (provisioned) with a fresh key, which
// registers it: a device task needs a registered core.
func benchEnroll(ctx context.Context, b *testing.B, api *apiclient.Client, core string) {
	b.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	if err := api.Do(ctx, http.MethodPost, "/cores/"+core+"/enrollmentTokens", map[string]any{}, &tok); err != nil {
		b.Fatalf("enrollment token for %s: %v", core, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: core}}, key)
	if err != nil {
		b.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if _, err := api.Enroll(ctx, apiclient.EnrollRequest{CoreName: core, Token: tok.Token, CsrPem: csr}); err != nil {
		b.Fatalf("enroll %s: %v", core, err)
	}
}

// benchWait polls the task until every item is final and returns how many failed.
func benchWait(ctx context.Context, b *testing.B, api *apiclient.Client, location string) int {
	for {
		var t struct {
			TaskStatus string `json:"taskStatus"`
			Cores      []struct {
				TaskStatus string `json:"taskStatus"`
			} `json:"cores"`
			Devices []struct {
				TaskStatus string `json:"taskStatus"`
			} `json:"devices"`
		}
		if err := api.Do(ctx, http.MethodGet, location, nil, &t); err != nil {
			b.Fatal(err)
		}
		items := append(t.Cores, t.Devices...)
		if t.TaskStatus == "Success" || t.TaskStatus == "Failure" {
			done, failed := 0, 0
			for _, it := range items {
				switch it.TaskStatus {
				case "Success":
					done++
				case "Failure":
					done, failed = done+1, failed+1
				}
			}
			if done == len(items) {
				return failed
			}
		}
		select { // GET /coreTasks/{id} of thousands of items is not free: poll gently
		case <-ctx.Done():
			b.Fatalf("task %s: %v", location, ctx.Err())
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
