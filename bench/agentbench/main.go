// Command agentbench measures ggagent as it ships, against a real broker,
// and prints the figures BENCHMARKS.md reports as a Markdown fragment:
//
//   - stripped binary size (CGO_ENABLED=0, -trimpath, -ldflags '-s -w')
//     for linux/amd64, linux/arm64 and linux/arm (GOARM=7);
//   - time from exec to the first health report the broker has stored;
//   - resident memory (VmRSS, sampled every second: max and final) and CPU
//     (utime+stime over wall time) of `ggagent run --runtime simulated
//     --health-interval 1s` over -duration.
//
// It builds both binaries itself, starts `ggfleet serve` on free local
// ports in a temporary directory, creates and enrolls one core, and cleans
// up after itself. It runs on Linux only (it reads /proc). `make bench`
// runs it with the full 10-minute duration. It asserts nothing: the figures
// are for people to read against the targets.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// Targets from the issue.
const (
	targetRSS   = 12_000_000 // bytes (12 MB)
	targetARM64 = 11_000_000 // bytes (11 MB)
)

const coreName = "bench-core"

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long to run the agent for the RSS and CPU figures")
	starts := flag.Int("starts", 5, "how many cold starts to time (exec to first stored health report)")
	out := flag.String("out", "", "also write the Markdown fragment to this file")
	agentEnv := flag.String("agent-env", "", "comma-separated KEY=VALUE pairs added to the environment of ggagent run, for experiments (e.g. GOGC=50)")
	flag.Parse()
	if runtime.GOOS != "linux" {
		fmt.Fprintln(os.Stderr, "agentbench: runs on Linux only (it reads /proc)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var env []string
	if *agentEnv != "" {
		env = strings.Split(*agentEnv, ",")
	}
	res, err := run(ctx, *duration, *starts, env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
	md := res.markdown()
	fmt.Print(md)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "agentbench:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "agentbench:", err)
			os.Exit(1)
		}
	}
}

// results are the measured figures.
type results struct {
	started  time.Time
	machine  []string
	agentEnv []string
	sizes    []size
	starts   []time.Duration
	duration time.Duration
	samples  int
	rssMax   memory // the sample with the highest VmRSS
	rssFinal memory
	rssFirst memory   // right after the first report
	rssByMin []memory // at the end of each minute
	// cpuIdle is CPU seconds per wall second between the first report and
	// the end; cpuAll is the same from exec to the end.
	cpuIdle, cpuAll float64
	connected       bool // the core was still ONLINE and HEALTHY at the end
}

type size struct {
	target string
	bytes  int64
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s agentbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, duration time.Duration, starts int, agentEnv []string) (*results, error) {
	res := &results{started: time.Now(), duration: duration, machine: machine(), agentEnv: agentEnv}
	tmp, err := os.MkdirTemp("", "agentbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	for _, tg := range []struct{ name, goarch, goarm string }{
		{"linux/amd64", "amd64", ""}, {"linux/arm64", "arm64", ""}, {"linux/arm (GOARM=7)", "arm", "7"},
	} {
		out := filepath.Join(tmp, "ggagent-"+tg.goarch)
		env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + tg.goarch}
		if tg.goarm != "" {
			env = append(env, "GOARM="+tg.goarm)
		}
		if err := goBuild(ctx, out, "./agent/cmd/ggagent", env...); err != nil {
			return nil, err
		}
		st, err := os.Stat(out)
		if err != nil {
			return nil, err
		}
		res.sizes = append(res.sizes, size{tg.name, st.Size()})
		logf("ggagent %s: %d bytes", tg.name, st.Size())
	}
	agentBin := filepath.Join(tmp, "ggagent")
	if err := goBuild(ctx, agentBin, "./agent/cmd/ggagent", "CGO_ENABLED=0"); err != nil {
		return nil, err
	}
	fleetBin := filepath.Join(tmp, "ggfleet")
	if err := goBuild(ctx, fleetBin, "./broker/cmd/ggfleet", "CGO_ENABLED=0"); err != nil {
		return nil, err
	}

	b, err := startBroker(ctx, fleetBin, tmp)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	if err := b.createCore(ctx); err != nil {
		return nil, err
	}
	stateDir := filepath.Join(tmp, "state")
	if err := b.enroll(ctx, agentBin, stateDir); err != nil {
		return nil, err
	}

	// Cold starts: each run is a fresh process on the enrolled state dir.
	// The broker's stored report is cleared of doubt by waiting for a
	// lastStatusUpdateTimestamp later than the process start.
	var agent *agentProc
	for i := range max(starts, 1) {
		if agent != nil {
			agent.stop()
		}
		agent, err = startAgent(agentBin, stateDir, filepath.Join(tmp, fmt.Sprintf("agent-%d.log", i)), agentEnv)
		if err != nil {
			return nil, err
		}
		d, err := b.waitFirstReport(ctx, agent)
		if err != nil {
			agent.stop()
			return nil, err
		}
		res.starts = append(res.starts, d)
		logf("start %d: exec to first stored health report %v", i+1, d.Round(time.Millisecond))
	}
	defer agent.stop()

	// The long run, measured from the first report of the last start.
	pid := agent.cmd.Process.Pid
	ticks0, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	if res.rssFirst, err = readMemory(pid); err != nil {
		return nil, err
	}
	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	nextLog := t0.Add(time.Minute)
	for time.Since(t0) < duration {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-agent.done:
			return nil, fmt.Errorf("ggagent exited during the run; log: %s", agent.logPath)
		case <-tick.C:
		}
		m, err := readMemory(pid)
		if err != nil {
			return nil, err
		}
		res.samples++
		if m.rss > res.rssMax.rss {
			res.rssMax = m
		}
		res.rssFinal = m
		if time.Now().After(nextLog) {
			res.rssByMin = append(res.rssByMin, m)
			logf("%v of %v: VmRSS %.2f MiB (anon %.2f, file %.2f; max %.2f MiB)", time.Since(t0).Round(time.Second), duration,
				mib(m.rss), mib(m.anon), mib(m.file), mib(res.rssMax.rss))
			nextLog = nextLog.Add(time.Minute)
		}
	}
	ticks1, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	wall := time.Since(t0).Seconds()
	res.cpuIdle = float64(ticks1-ticks0) / clockTicks / wall
	res.cpuAll = float64(ticks1) / clockTicks / time.Since(agent.started).Seconds()
	dev, err := b.device(ctx)
	if err != nil {
		return nil, err
	}
	res.connected = dev.Status == "HEALTHY" && dev.Connectivity == "ONLINE"
	return res, nil
}

// goBuild builds a stripped binary as it ships.
func goBuild(ctx context.Context, out, pkg string, env ...string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (%s): %w", pkg, strings.Join(env, " "), err)
	}
	return nil
}

// machine describes where the figures were measured.
func machine() []string {
	var m []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m = append(m, "CPU: "+strings.TrimSpace(v))
				break
			}
		}
	}
	m = append(m, fmt.Sprintf("nproc: %d", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m = append(m, "memory: "+strings.Join(strings.Fields(line)[1:], " "))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m = append(m, "kernel: Linux "+strings.TrimSpace(string(b))+" "+runtime.GOARCH)
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m = append(m, "toolchain: "+strings.TrimSpace(string(out)))
	}
	return m
}

// memory is a process's resident memory, in bytes, from /proc/PID/status:
// VmRSS is the total, RssAnon the process's own (heap, stacks), RssFile
// the pages of mapped files (the binary's code and data, shared and
// reclaimable).
type memory struct{ rss, anon, file int64 }

func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		dst, ok := fields[f[0]]
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || len(f) != 3 || f[2] != "kB" {
			return memory{}, fmt.Errorf("unexpected /proc status line %q", sc.Text())
		}
		*dst = kb * 1024
		found++
	}
	if found != len(fields) {
		return memory{}, errors.New("no VmRSS, RssAnon or RssFile in /proc status")
	}
	return m, nil
}

// cpuTicks is utime+stime of a process, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state is field 3, so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// broker is the ggfleet serve process.
type broker struct {
	cmd   *exec.Cmd
	done  chan struct{}
	url   string
	token string
	http  *http.Client
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startBroker(ctx context.Context, bin, tmp string) (*broker, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(tmp, "broker")
	logFile, err := os.Create(filepath.Join(tmp, "broker.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--data-dir", data, "--listen", listen, "--mqtt-listen", mqttAddr, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = io.Discard, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	b := &broker{cmd: cmd, done: make(chan struct{}), url: "http://" + listen, http: &http.Client{Timeout: 30 * time.Second}}
	go func() { _ = cmd.Wait(); logFile.Close(); close(b.done) }()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := b.http.Get(b.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-b.done:
			return nil, errors.New("ggfleet serve exited at start")
		case <-ctx.Done():
			b.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, errors.New("ggfleet serve not ready after a minute")
		}
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		b.stop()
		return nil, err
	}
	b.token = strings.TrimSpace(string(tok))
	return b, nil
}

func (b *broker) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// call sends a JSON request with the admin token and decodes a JSON answer.
func (b *broker) call(ctx context.Context, method, path string, body, v any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Accept", "application/vnd.aws-cdf-v1.0+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/vnd.aws-cdf-v1.0+json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if v != nil && len(data) > 0 {
		if err := json.Unmarshal(data, v); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

func (b *broker) createCore(ctx context.Context) error {
	h, err := b.call(ctx, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Create",
		"cores": []map[string]any{{"name": coreName, "provisioningTemplate": "ggfleet-core",
			"provisioningParameters": map[string]string{"ThingName": coreName}}}}, nil)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var task struct {
			TaskStatus string `json:"taskStatus"`
		}
		if _, err := b.call(ctx, "GET", "/coreTasks/"+h.Get("x-taskid"), nil, &task); err != nil {
			return err
		}
		switch task.TaskStatus {
		case "Success":
			return nil
		case "Failure":
			return errors.New("the core task failed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("the core task did not finish in 2 minutes")
}

func (b *broker) enroll(ctx context.Context, bin, stateDir string) error {
	var tok struct {
		Token string `json:"token"`
	}
	if _, err := b.call(ctx, "POST", "/cores/"+coreName+"/enrollmentTokens", map[string]any{}, &tok); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "enroll", "--broker", b.url, "--core", coreName, "--state-dir", stateDir)
	cmd.Env = append(os.Environ(), "GGAGENT_TOKEN="+tok.Token)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ggagent enroll: %w\n%s", err, out)
	}
	return nil
}

// deviceView is the part of GET /cores/{name} the benchmark reads.
type deviceView struct {
	Status                    string `json:"status"`
	Connectivity              string `json:"connectivity"`
	LastStatusUpdateTimestamp string `json:"lastStatusUpdateTimestamp"`
}

func (b *broker) device(ctx context.Context) (deviceView, error) {
	var c struct {
		Device deviceView `json:"device"`
	}
	_, err := b.call(ctx, "GET", "/cores/"+coreName, nil, &c)
	return c.Device, err
}

// waitFirstReport polls the broker every 10 ms until it has stored a health
// report from this agent process (lastStatusUpdateTimestamp, the report's
// own timestamp, at or after the exec) and returns the time since exec.
func (b *broker) waitFirstReport(ctx context.Context, a *agentProc) (time.Duration, error) {
	deadline := a.started.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		d, err := b.device(ctx)
		if err != nil {
			return 0, err
		}
		if ts, err := time.Parse(time.RFC3339Nano, d.LastStatusUpdateTimestamp); err == nil && !ts.Before(a.started.Truncate(time.Millisecond)) {
			return time.Since(a.started), nil
		}
		select {
		case <-a.done:
			return 0, fmt.Errorf("ggagent exited; log: %s", a.logPath)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("no health report stored within 2 minutes; agent log: %s", a.logPath)
}

// agentProc is one `ggagent run` process.
type agentProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time
	logPath string
}

func startAgent(bin, stateDir, logPath string, env []string) (*agentProc, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--state-dir", stateDir, "--runtime", "simulated", "--health-interval", "1s", "--log-format", "json")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	a := &agentProc{cmd: cmd, done: make(chan struct{}), logPath: logPath}
	a.started = time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); logFile.Close(); close(a.done) }()
	return a, nil
}

func (a *agentProc) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**NOT met**"
}

// markdown renders the results as the fragment BENCHMARKS.md quotes.
func (r *results) markdown() string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("Measured %s by `go run ./bench/agentbench -duration %s` (%s in all).\n\n",
		r.started.UTC().Format("2006-01-02 15:04 UTC"), r.duration, time.Since(r.started).Round(time.Second))
	w("Machine: %s.\n\n", strings.Join(r.machine, "; "))
	if len(r.agentEnv) > 0 {
		w("Experiment: ggagent run with the extra environment `%s`.\n\n", strings.Join(r.agentEnv, " "))
	}
	w("| figure | value | target |\n|---|---|---|\n")
	for _, s := range r.sizes {
		target := ""
		if s.target == "linux/arm64" {
			target = fmt.Sprintf("≤ 11 MB: %s", met(s.bytes <= targetARM64))
		}
		w("| stripped ggagent, %s | %d bytes (%.2f MB, %.2f MiB) | %s |\n", s.target, s.bytes, float64(s.bytes)/1e6, mib(s.bytes), target)
	}
	st := slices.Sorted(slices.Values(r.starts))
	w("| exec → first health report stored by the broker (%d cold starts) | median %v (min %v, max %v) | |\n",
		len(st), st[len(st)/2].Round(time.Millisecond), st[0].Round(time.Millisecond), st[len(st)-1].Round(time.Millisecond))
	memRow := func(what string, m memory, target string) {
		w("| %s | %.2f MiB (%.2f MB) = RssAnon %.2f MiB + RssFile %.2f MiB | %s |\n", what, mib(m.rss), float64(m.rss)/1e6, mib(m.anon), mib(m.file), target)
	}
	memRow("VmRSS right after the first report", r.rssFirst, "")
	memRow(fmt.Sprintf("VmRSS max over %s (%d samples, 1 s apart)", r.duration, r.samples), r.rssMax, "≤ 12 MB: "+met(r.rssMax.rss <= targetRSS))
	memRow("VmRSS at the end", r.rssFinal, "≤ 12 MB: "+met(r.rssFinal.rss <= targetRSS))
	w("| CPU while idle (utime+stime / wall, first report → end) | %.3f%% of one core | |\n", r.cpuIdle*100)
	w("| CPU from exec to the end | %.3f%% of one core | |\n", r.cpuAll*100)
	if len(r.rssByMin) > 0 {
		var mins []string
		for i, b := range r.rssByMin {
			mins = append(mins, fmt.Sprintf("%d min: %.2f (anon %.2f)", i+1, mib(b.rss), mib(b.anon)))
		}
		w("\nVmRSS in MiB minute by minute: %s.\n", strings.Join(mins, ", "))
	}
	w("\nThe core was HEALTHY and ONLINE at the end: %v.\n", r.connected)
	return sb.String()
}
