package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/server"
	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// options configures one run.
type options struct {
	Cores    int
	Workers  int
	Latency  time.Duration
	Timeout  time.Duration
	Logger   *slog.Logger
	Progress io.Writer // progress lines; nil for none
}

// opStat is one AWS operation's figures.
type opStat struct {
	Op        string
	Calls     int
	Throttled int
	Quota     float64
	PerCore   float64
	Share     float64 // achieved TPS / quota
}

// result is what a run measured.
type result struct {
	Cores, Failed  int
	Workers        int
	Latency        time.Duration
	Elapsed        time.Duration
	Bottleneck     opStat
	CeilingPerSec  float64 // cores per second the bottleneck quota allows
	AchievedPerSec float64
	Ratio          float64
	Ops            []opStat
	GoVersion      string
	CPUs           int
}

const bucket = "ggfleet-bench-artifacts"

// Run starts the fake and a broker, runs one core task and measures it.
func Run(ctx context.Context, o options) (result, error) {
	if o.Cores < 1 {
		return result{}, errors.New("-cores must be at least 1")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "awsbench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	// Static credentials, and none of the machine's AWS configuration.
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED": "true",
	} {
		os.Setenv(k, v)
	}

	fake, err := awsfake.Start("127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	defer fake.Close()
	fake.CreateBucket(bucket)
	fake.Latency(o.Latency)

	listen, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	mqtt, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	// The broker connects to the fake's AWS IoT data endpoint, whose TLS
	// certificate comes from the fake's root.
	rootCA := filepath.Join(dir, "iot-root-ca.pem")
	if err := os.WriteFile(rootCA, []byte(fake.RootCAPEM()), 0o600); err != nil {
		return result{}, err
	}
	cfg := server.Config{
		DataDir: filepath.Join(dir, "data"), Listen: listen, MQTTListen: mqtt, Provider: "aws",
		AWSRegion: awsfake.Region, AWSEndpointURL: fake.URL(), AWSIoTCAFile: rootCA, ArtifactsBucket: bucket, EventBus: "default",
		IoTRoleAlias: "GreengrassV2TokenExchangeRoleAlias", MaxBodyBytes: 16 << 20, Workers: o.Workers,
		ShutdownTimeout: 20 * time.Second, DeploymentTimeout: 10 * time.Minute, Logger: o.Logger,
	}
	if err := cfg.Validate(); err != nil {
		return result{}, err
	}
	srvCtx, srvStop := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- server.Run(srvCtx, cfg) }()
	defer func() {
		srvStop()
		<-srvDone
	}()

	c := &client{base: "http://" + listen, http: &http.Client{Timeout: time.Minute}}
	if err := c.waitReady(ctx, srvDone, filepath.Join(cfg.DataDir, "admin.token")); err != nil {
		return result{}, err
	}

	cores := make([]cdf.NewCore, o.Cores)
	for i := range cores {
		name := fmt.Sprintf("bench-core-%05d", i)
		cores[i] = cdf.NewCore{Name: name, ProvisioningTemplate: "ggfleet-core",
			ProvisioningParameters: map[string]string{"ThingName": name}, ConfigFileGenerator: "MANUAL_INSTALL"}
	}
	before := fake.AllCalls()
	progress(o.Progress, "awsbench: submitting a core task of %d cores (workers %d, fake latency %s)", o.Cores, o.Workers, o.Latency)
	start := time.Now()
	id, err := c.submit(ctx, cdf.NewCoreTask{CoreVersion: "2.12.0", Type: "Create", Cores: cores})
	if err != nil {
		return result{}, err
	}
	task, err := c.wait(ctx, id, o.Progress, o.Cores)
	if err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)

	res := result{Cores: o.Cores, Workers: o.Workers, Latency: o.Latency, Elapsed: elapsed,
		GoVersion: runtime.Version(), CPUs: runtime.NumCPU()}
	for _, it := range task.Cores {
		if it.TaskStatus != "Success" {
			res.Failed++
		}
	}
	after := fake.AllCalls()
	for op, n := range after {
		n -= before[op]
		q := fake.Quota(op)
		if n == 0 || q <= 0 {
			continue
		}
		// Throttled calls did not count against the quota: the ceiling and
		// shares are computed from admitted calls.
		th := fake.Throttled(op)
		st := opStat{Op: op, Calls: n, Throttled: th, Quota: q, PerCore: float64(n-th) / float64(o.Cores),
			Share: float64(n-th) / elapsed.Seconds() / q}
		res.Ops = append(res.Ops, st)
		if st.PerCore/st.Quota > res.Bottleneck.PerCore/max(res.Bottleneck.Quota, 1e-9) || res.Bottleneck.Op == "" {
			res.Bottleneck = st
		}
	}
	sort.Slice(res.Ops, func(i, j int) bool { return res.Ops[i].Op < res.Ops[j].Op })
	res.CeilingPerSec = res.Bottleneck.Quota / res.Bottleneck.PerCore
	res.AchievedPerSec = float64(o.Cores) / elapsed.Seconds()
	res.Ratio = res.AchievedPerSec / res.CeilingPerSec
	return res, nil
}

// Markdown is the fragment BENCHMARKS.md quotes.
func (r result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| cores in one Create task | %d |\n", r.Cores)
	fmt.Fprintf(&b, "| failed cores | %d |\n", r.Failed)
	fmt.Fprintf(&b, "| wall time, submit to task end | %s |\n", r.Elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "| bottleneck operation | %s: %.0f TPS quota, %.2f admitted calls per core |\n", r.Bottleneck.Op, r.Bottleneck.Quota, r.Bottleneck.PerCore)
	fmt.Fprintf(&b, "| quota ceiling | %.2f cores/s |\n", r.CeilingPerSec)
	fmt.Fprintf(&b, "| achieved | %.2f cores/s |\n", r.AchievedPerSec)
	fmt.Fprintf(&b, "| **achieved / ceiling** | **%.3f** |\n", r.Ratio)
	fmt.Fprintf(&b, "| throttled calls, all retried by the provider (all operations) | %d |\n", r.throttled())
	fmt.Fprintf(&b, "| setup | --workers %d, fake latency %s per call, %s, %d CPUs |\n\n", r.Workers, r.Latency, r.GoVersion, r.CPUs)
	fmt.Fprintf(&b, "| operation | calls | admitted per core | quota (TPS) | admitted TPS / quota | throttled (retried) |\n|---|---|---|---|---|---|\n")
	for _, s := range r.Ops {
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.0f | %.3f | %d |\n", s.Op, s.Calls, s.PerCore, s.Quota, s.Share, s.Throttled)
	}
	return b.String()
}

func (r result) throttled() int {
	n := 0
	for _, s := range r.Ops {
		n += s.Throttled
	}
	return n
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// client is a minimal client of the broker API.
type client struct {
	base string
	http *http.Client
	api  *apiclient.Client // made once the admin token is known (waitReady)
}

func (c *client) waitReady(ctx context.Context, srvDone <-chan error, tokenPath string) error {
	for {
		select {
		case err := <-srvDone:
			return fmt.Errorf("broker exited early: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := c.http.Get(c.base + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		tok, err := os.ReadFile(tokenPath)
		if err != nil {
			return fmt.Errorf("read admin token: %w", err)
		}
		c.api, err = apiclient.New(apiclient.Config{BaseURL: c.base, Token: strings.TrimSpace(string(tok)), HTTPClient: c.http, UserAgent: "awsbench"})
		return err
	}
}

func (c *client) submit(ctx context.Context, t cdf.NewCoreTask) (string, error) {
	loc, err := c.api.Create(ctx, http.MethodPost, "/coreTasks", t)
	if err != nil {
		return "", err
	}
	return loc[strings.LastIndex(loc, "/")+1:], nil
}

// wait polls the task until it ends, printing progress every 10 s.
func (c *client) wait(ctx context.Context, id string, w io.Writer, total int) (cdf.CoreTask, error) {
	last := time.Now()
	for {
		var t cdf.CoreTask
		if err := c.api.Do(ctx, http.MethodGet, "/coreTasks/"+id, nil, &t); err != nil {
			return cdf.CoreTask{}, err
		}
		if t.TaskStatus == "Success" || t.TaskStatus == "Failure" {
			done := 0
			for _, it := range t.Cores {
				if it.TaskStatus == "Success" || it.TaskStatus == "Failure" {
					done++
				}
			}
			if done == len(t.Cores) {
				return t, nil
			}
		}
		if time.Since(last) >= 10*time.Second {
			done := 0
			for _, it := range t.Cores {
				if it.TaskStatus == "Success" || it.TaskStatus == "Failure" {
					done++
				}
			}
			progress(w, "awsbench: %d/%d cores done", done, total)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return cdf.CoreTask{}, fmt.Errorf("task %s: %w", id, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
