// Package daemon is the composition root of `ggagent run`: it loads the
// enrolled identity, opens the one MQTT session, and runs the health
// reporter, the deployment applier and the patch runner under one context, so every
// goroutine is stopped by cancelling it. Nothing else names the concrete
// runtime or client.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/agent/cli"
	"github.com/ggfleet/ggfleet/agent/deploy"
	"github.com/ggfleet/ggfleet/agent/health"
	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/mqttclient"
	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/agent/patch"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// statusInterval is how often status.json (read by `ggagent status`) is refreshed.
const statusInterval = 5 * time.Second

// The agent lives for months on small devices next to a JVM: it keeps its
// heap small (GC at 50 % growth instead of 100 %, unless GOGC is set) and
// hands freed memory back to the OS once a minute instead of letting the
// runtime's slow scavenger keep it. Measured in BENCHMARKS.md.
const (
	defaultGCPercent   = 50
	memoryReturnPeriod = time.Minute
)

// tuneMemory applies the agent's GC setting unless the operator chose one.
func tuneMemory() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// returnMemory gives freed heap pages back to the OS every period until ctx ends.
func returnMemory(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			debug.FreeOSMemory()
		}
	}
}

// Run runs the agent until ctx ends. It is cli.RunAgent.
func Run(ctx context.Context, cfg cli.RunConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	dir, err := statedir.OpenExisting(cfg.StateDir)
	if err != nil {
		return err
	}
	id, err := identity.Load(dir)
	if err != nil {
		return err
	}
	tlsCfg, err := id.TLSConfig()
	if err != nil {
		return err
	}

	var rt nucleus.Runtime
	switch cfg.Runtime {
	case cli.RuntimeSimulated:
		opts, err := simOptionsFromEnv(os.Getenv)
		if err != nil {
			return err
		}
		sim, err := nucleus.NewSimulated(dir.Path(), opts)
		if err != nil {
			return err
		}
		rt = sim
	default:
		rt = nucleus.NewGreengrass(nucleus.GreengrassConfig{StateDir: dir.Path(), Logger: log})
	}

	var client *mqttclient.Client
	publish := func(suffix string) func(ctx context.Context, v any) error {
		return func(ctx context.Context, v any) error {
			payload, err := json.Marshal(v)
			if err != nil {
				return fmt.Errorf("encode %s: %w", suffix, err)
			}
			return client.Publish(ctx, suffix, payload)
		}
	}
	publishStatus := publish(mqttmsg.DeploymentStatus)
	publishHealth := publish(mqttmsg.Health)

	// In AWS mode Greengrass itself delivers deployments; the agent only reports.
	var applier *deploy.Applier
	if id.Mode != identity.ModeAWS {
		applier = deploy.New(deploy.Config{Runtime: rt, Dir: dir, Logger: log,
			Report: func(ctx context.Context, m mqttmsg.DeploymentStatusMsg) error { return publishStatus(ctx, m) }})
	}
	var effective func() []mqttmsg.EffectiveDeployment
	if applier != nil {
		effective = applier.Effective
	}
	cert := id.Certificate()
	reporter := health.New(health.Config{ThingName: id.ThingName, Runtime: rt, Deployments: effective,
		CertNotBefore: cert.NotBefore, CertNotAfter: cert.NotAfter, Interval: cfg.HealthInterval,
		Publish:      func(ctx context.Context, m mqttmsg.HealthMsg) error { return publishHealth(ctx, m) },
		PollInterval: pollInterval(cfg), StatFS: dir.Path(), Logger: log})

	// The patch runner is made right after the client: it publishes through
	// it (re-sending unreported completions at once), and hello lists its
	// journal, which is asked for only once the session connects.
	var runner *patch.Runner
	client, err = mqttclient.New(mqttclient.Config{
		Endpoint: id.MQTTEndpoint, ClientID: id.ClientID(), Thing: id.ThingName, TLS: tlsCfg,
		OutboxDir: dir.File("outbox"), Logger: log,
		Hello: func() mqttmsg.HelloMsg {
			caps := []string{"health", "patches", "ssh", "serial", "sftp"}
			if applier != nil {
				caps = append(caps, "deployments")
			}
			return mqttmsg.HelloMsg{Version: mqttmsg.Version, AgentVersion: version.Version, Capabilities: caps, Patches: runner.Patches()}
		},
	})
	if err != nil {
		return err
	}
	runner, err = patch.New(patch.Config{StateDir: dir.Path(), CoreName: id.ThingName,
		Publisher: client, Concurrency: cfg.PatchConcurrency, Logger: log})
	if err != nil {
		return err
	}
	defer runner.Close()
	if applier != nil {
		client.Subscribe(mqttmsg.Deployments, func(ctx context.Context, payload []byte) {
			d, err := mqttmsg.Decode[mqttmsg.DeploymentMsg](payload)
			if err != nil {
				log.Warn("ignoring a deployment document that does not decode", "err", err)
				return
			}
			applier.Submit(d)
		})
	}

	client.Subscribe(patchmsg.StartTopic("+"), runner.HandleStart)
	client.Subscribe(patchmsg.CancelTopic("+"), runner.HandleCancel)
	client.Subscribe(patchmsg.ProbeTopic("+"), runner.HandleProbe)

	tuneMemory()
	log.Info("ggagent running", "version", version.Version, "broker", id.MQTTEndpoint, "mode", id.Mode, "runtime", rt.Name())
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	start := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(runCtx); err != nil && runCtx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	start("MQTT session", client.Run)
	start("health reports", reporter.Run)
	if applier != nil {
		start("deployments", applier.Run)
	}
	start("patch runner", func(ctx context.Context) error {
		<-ctx.Done()
		return runner.Close()
	})
	start("memory return", func(ctx context.Context) error { return returnMemory(ctx, memoryReturnPeriod) })
	start("status file", func(ctx context.Context) error { return writeStatus(ctx, dir, client, reporter, applier) })
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if len(all) > 0 {
		return errors.Join(all...)
	}
	return ctx.Err()
}

// EnvSimulatedStepDelay makes each component step of the simulated runtime
// take this long (a Go duration such as 5s), so tests, demos and benchmarks
// can see a deployment in progress. It is a debugging knob, not a stable
// interface, and is read only with --runtime simulated.
const EnvSimulatedStepDelay = "GGAGENT_SIMULATED_STEP_DELAY"

// simOptionsFromEnv reads the simulated runtime's debugging knobs.
func simOptionsFromEnv(getenv func(string) string) (nucleus.SimOptions, error) {
	var opts nucleus.SimOptions
	if v := getenv(EnvSimulatedStepDelay); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return opts, fmt.Errorf("environment variable %s=%q: use a non-negative duration such as 5s", EnvSimulatedStepDelay, v)
		}
		opts.StepDelay = d
	}
	return opts, nil
}

// pollInterval keeps runtime polling cheap: greengrass-cli starts a JVM.
func pollInterval(cfg cli.RunConfig) time.Duration {
	if cfg.Runtime == cli.RuntimeSimulated {
		return min(cfg.HealthInterval, 2*time.Second)
	}
	return time.Minute
}

// status is what `ggagent status` shows about the running agent.
type status struct {
	Version       int       `json:"version"`
	UpdatedAt     time.Time `json:"updatedAt"`
	Connected     bool      `json:"connected"`
	Connects      uint64    `json:"connects"`
	OutboxLength  int       `json:"outboxLength"`
	Delivered     uint64    `json:"delivered"` // reports the broker acknowledged since start
	LastReport    time.Time `json:"lastReport,omitempty"`
	HealthStatus  string    `json:"healthStatus,omitempty"`
	Unhealthy     []string  `json:"unhealthyReasons,omitempty"`
	Deployment    string    `json:"deployment,omitempty"`
	DeploymentSt  string    `json:"deploymentStatus,omitempty"`
	AgentVersion  string    `json:"agentVersion"`
	HostUptimeSec int64     `json:"hostUptimeSeconds,omitempty"`
}

// writeStatus refreshes status.json until ctx ends.
func writeStatus(ctx context.Context, dir *statedir.Dir, c *mqttclient.Client, r *health.Reporter, a *deploy.Applier) error {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		st := c.Stats()
		snap := r.Last()
		s := status{Version: 1, UpdatedAt: time.Now().UTC(), Connected: st.Connected, Connects: st.Connects,
			OutboxLength: st.OutboxLen, Delivered: st.Delivered, LastReport: snap.Msg.Timestamp, HealthStatus: snap.Msg.Status,
			Unhealthy: snap.Reasons, AgentVersion: version.Version, HostUptimeSec: snap.HostUptimeSeconds}
		if a != nil {
			cur := a.Current()
			s.Deployment, s.DeploymentSt = cur.DeploymentID, cur.Status
		}
		_ = dir.WriteJSON(statedir.StatusFile, s) // best effort: status is informational
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
