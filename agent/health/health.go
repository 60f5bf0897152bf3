// Package health builds and publishes the core's health report on
// ggfleet/things/{core}/health: overall status (HEALTHY/UNHEALTHY), the
// nucleus's and every component's state, the effective deployment, CPU,
// memory and disk, uptime, agent version and certificate expiry. It publishes
// every Interval and at once when the status, the nucleus, a component or a
// deployment changes.
//
// It runs for months on small devices, so it polls cheaply, reuses its
// buffers for /proc, and keeps no history. agent/daemon composes it; it
// imports agent/nucleus, shared/mqttmsg and internal/version.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// CertWarning is how close to expiry the device certificate makes the core
// UNHEALTHY, so operators renew it before the core drops off.
const CertWarning = 7 * 24 * time.Hour

// EarliestPlausibleTime is the default Config.BuildTime: a clock before it
// is clearly wrong (this code did not exist yet).
var EarliestPlausibleTime = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Config wires a Reporter.
type Config struct {
	// ThingName is the core's thing name.
	ThingName string
	// Runtime reports the nucleus and its components.
	Runtime nucleus.Runtime
	// Deployments returns the effective deployments (deploy.Applier.Effective);
	// nil means none.
	Deployments func() []mqttmsg.EffectiveDeployment
	// CertNotBefore and CertNotAfter are the device certificate's validity;
	// a clock before NotBefore is wrong, NotAfter within CertWarning is unhealthy.
	CertNotBefore, CertNotAfter time.Time
	// BuildTime is the earliest time the clock may show (default EarliestPlausibleTime).
	BuildTime time.Time
	// Interval is how often a report is published without changes (default 30s).
	Interval time.Duration
	// PollInterval is how often the runtime is asked for changes (default
	// 10s, at most Interval). On a real core each poll runs
	// `greengrass-cli component list`, which starts a JVM: agent/daemon should
	// choose a longer poll (a minute) for the greengrass runtime.
	PollInterval time.Duration
	// Publish sends a report (QoS 1).
	Publish func(ctx context.Context, m mqttmsg.HealthMsg) error
	// Logger receives the reporter's logs (default: discarded).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// StatFS is a path on the filesystem whose free space is reported; the
	// daemon passes the state directory (default "/").
	StatFS string
	// ProcDir is where /proc is mounted (default "/proc"; tests use fixtures).
	ProcDir string
}

// Snapshot is the latest report with what the message has no field for,
// for `ggagent status`.
type Snapshot struct {
	Msg mqttmsg.HealthMsg
	// Reasons say why the status is UNHEALTHY (empty when HEALTHY).
	Reasons []string
	// HostUptimeSeconds is the host's uptime from /proc/uptime (0 if unknown).
	HostUptimeSeconds int64
}

// Reporter builds and publishes health reports.
type Reporter struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	mu      sync.Mutex // guards the fields below; Report may run beside Run
	buf     []byte
	prevCPU cpuTimes // zero before the first report: the first figure is the average since boot
	last    Snapshot
}

// New returns a Reporter. It starts nothing; call Run.
func New(cfg Config) *Reporter {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Deployments == nil {
		cfg.Deployments = func() []mqttmsg.EffectiveDeployment { return nil }
	}
	if cfg.BuildTime.IsZero() {
		cfg.BuildTime = EarliestPlausibleTime
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 10 * time.Second
	}
	cfg.PollInterval = min(cfg.PollInterval, cfg.Interval)
	if cfg.StatFS == "" {
		cfg.StatFS = "/"
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	return &Reporter{cfg: cfg, log: cfg.Logger, started: cfg.Now(), buf: make([]byte, 0, 4096)}
}

// Report builds one health report. Problems reading the runtime or the
// system make the report UNHEALTHY or leave figures at zero; the only error
// is ctx ending.
func (r *Reporter) Report(ctx context.Context) (mqttmsg.HealthMsg, error) {
	if err := ctx.Err(); err != nil {
		return mqttmsg.HealthMsg{}, err
	}
	ns, err := r.cfg.Runtime.Nucleus(ctx)
	if err != nil {
		r.log.Warn("nucleus state", "err", err)
		ns = mqttmsg.NucleusState{State: nucleus.StateUnknown}
	}
	comps, err := r.cfg.Runtime.Components(ctx)
	if err != nil {
		r.log.Warn("component states", "err", err)
	}
	if comps == nil {
		comps = []mqttmsg.ComponentState{}
	}
	if err := ctx.Err(); err != nil {
		return mqttmsg.HealthMsg{}, err
	}
	deps := r.cfg.Deployments()
	if deps == nil {
		deps = []mqttmsg.EffectiveDeployment{}
	}
	now := r.cfg.Now()
	m := mqttmsg.HealthMsg{
		Version:              mqttmsg.Version,
		ThingName:            r.cfg.ThingName,
		Timestamp:            now.UTC(),
		IntervalSeconds:      int(r.cfg.Interval / time.Second),
		Status:               mqttmsg.Healthy,
		Nucleus:              ns,
		Components:           comps,
		EffectiveDeployments: deps,
		Platform:             runtime.GOOS,
		Architecture:         runtime.GOARCH,
		AgentVersion:         version.Version,
		UptimeSeconds:        int64(now.Sub(r.started) / time.Second),
		CertificateNotAfter:  r.cfg.CertNotAfter.UTC(),
	}
	reasons := Unhealthy(Checks{Now: now, Nucleus: ns, Components: comps,
		CertNotBefore: r.cfg.CertNotBefore, CertNotAfter: r.cfg.CertNotAfter, BuildTime: r.cfg.BuildTime})
	if len(reasons) > 0 {
		m.Status = mqttmsg.Unhealthy
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	m.System = r.system()
	r.last = Snapshot{Msg: m, Reasons: reasons, HostUptimeSeconds: r.hostUptime()}
	return m, nil
}

// Last returns the latest report Report built.
func (r *Reporter) Last() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Checks are the inputs of the UNHEALTHY rules.
type Checks struct {
	Now                         time.Time
	Nucleus                     mqttmsg.NucleusState
	Components                  []mqttmsg.ComponentState
	CertNotBefore, CertNotAfter time.Time
	BuildTime                   time.Time
}

// Unhealthy returns why a core is UNHEALTHY, or nil when it is HEALTHY: the
// nucleus is not RUNNING, a component is BROKEN or ERRORED, the device
// certificate expires within CertWarning, or the clock is clearly wrong
// (before the certificate's NotBefore or the build time).
func Unhealthy(c Checks) []string {
	var reasons []string
	if c.Nucleus.State != nucleus.StateRunning {
		reasons = append(reasons, fmt.Sprintf("the nucleus is %s, not RUNNING", c.Nucleus.State))
	}
	for _, comp := range c.Components {
		if comp.State == nucleus.StateBroken || comp.State == nucleus.StateErrored {
			reasons = append(reasons, fmt.Sprintf("component %s is %s", comp.Name, comp.State))
		}
	}
	if !c.CertNotAfter.IsZero() && c.Now.Add(CertWarning).After(c.CertNotAfter) {
		reasons = append(reasons, fmt.Sprintf("the device certificate expires at %s; renew it", c.CertNotAfter.UTC().Format(time.RFC3339)))
	}
	switch {
	case !c.CertNotBefore.IsZero() && c.Now.Before(c.CertNotBefore):
		reasons = append(reasons, fmt.Sprintf("the clock (%s) is before the device certificate's start (%s); check time synchronisation",
			c.Now.UTC().Format(time.RFC3339), c.CertNotBefore.UTC().Format(time.RFC3339)))
	case !c.BuildTime.IsZero() && c.Now.Before(c.BuildTime):
		reasons = append(reasons, fmt.Sprintf("the clock (%s) is before the agent was built; check time synchronisation",
			c.Now.UTC().Format(time.RFC3339)))
	}
	return reasons
}

// system reads CPU, memory and disk figures; r.mu is held.
func (r *Reporter) system() mqttmsg.SystemStats {
	var s mqttmsg.SystemStats
	var err error
	r.buf, err = readInto(filepath.Join(r.cfg.ProcDir, "stat"), r.buf)
	if err == nil {
		var cur cpuTimes
		if cur, err = parseStat(r.buf); err == nil {
			s.CPUPercent = cpuPercent(r.prevCPU, cur)
			r.prevCPU = cur
		}
	}
	if err != nil {
		r.log.Debug("cpu figures", "err", err)
	}
	r.buf, err = readInto(filepath.Join(r.cfg.ProcDir, "meminfo"), r.buf)
	if err == nil {
		s.MemTotalBytes, s.MemUsedBytes, err = parseMeminfo(r.buf)
	}
	if err != nil {
		r.log.Debug("memory figures", "err", err)
	}
	if s.DiskFreeBytes, err = diskFree(r.cfg.StatFS); err != nil {
		r.log.Debug("disk figures", "err", err)
	}
	return s
}

// hostUptime reads /proc/uptime; r.mu is held.
func (r *Reporter) hostUptime() int64 {
	var err error
	r.buf, err = readInto(filepath.Join(r.cfg.ProcDir, "uptime"), r.buf)
	if err != nil {
		return 0
	}
	up, err := parseUptime(r.buf)
	if err != nil {
		return 0
	}
	return up
}

// Run publishes a report at once, then every Interval, and as soon as a poll
// (every PollInterval) sees the status, the nucleus, a component or a
// deployment change. It returns nil when ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	periodic := time.NewTimer(0) // first report at once
	defer periodic.Stop()

	var sent sentState
	dirty := false // the last publish failed
	for {
		due := false
		select {
		case <-ctx.Done():
			return nil
		case <-periodic.C:
			due = true
		case <-poll.C:
		}
		m, err := r.Report(ctx)
		if err != nil {
			return nil // ctx ended
		}
		if !due && !dirty && sent.same(&m) {
			continue
		}
		if !due {
			r.log.Info("health changed", "status", m.Status, "nucleus", m.Nucleus.State)
		}
		if err := r.cfg.Publish(ctx, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log.Warn("publish health", "err", err)
			dirty = true
			continue
		}
		dirty = false
		sent.remember(&m)
		if reasons := r.Last().Reasons; len(reasons) > 0 {
			r.log.Debug("core unhealthy", "reasons", reasons)
		}
		periodic.Reset(r.cfg.Interval)
	}
}

// sentState is what the last published report said, to detect changes
// without keeping whole messages.
type sentState struct {
	status      string
	nucleus     mqttmsg.NucleusState
	components  []mqttmsg.ComponentState
	deployments []mqttmsg.EffectiveDeployment
}

func (s *sentState) same(m *mqttmsg.HealthMsg) bool {
	return s.status == m.Status && s.nucleus == m.Nucleus &&
		slices.Equal(s.components, m.Components) && slices.Equal(s.deployments, m.EffectiveDeployments)
}

func (s *sentState) remember(m *mqttmsg.HealthMsg) {
	s.status, s.nucleus = m.Status, m.Nucleus
	s.components = append(s.components[:0], m.Components...)
	s.deployments = append(s.deployments[:0], m.EffectiveDeployments...)
}
