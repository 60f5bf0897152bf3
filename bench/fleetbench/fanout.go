package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ggfleet/ggfleet/bench/benchpki"
	"github.com/ggfleet/ggfleet/bench/loadgen"
	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// fanoutResult is one P4 measurement: ggfleet's or the physical bound's.
type fanoutResult struct {
	Elapsed  time.Duration // start to every agent's SUCCEEDED handled (bound) or the task's end (ggfleet)
	Notify   time.Duration // start to the last agent receiving its document
	Received int           // agents that received the document
	Status   string        // the deployment task's status (ggfleet only)
	Lost     int64         // agents' reports not acknowledged
	Ingest   ingestResult  // P5 on the same fleet (when a burst was asked for)
}

// docTimes records when each agent first received each task's document.
type docTimes struct {
	mu    sync.Mutex
	first map[string]map[string]time.Time // task id → thing → first arrival
}

func (d *docTimes) record(thing string, doc mqttmsg.DeploymentMsg, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.first == nil {
		d.first = map[string]map[string]time.Time{}
	}
	m := d.first[doc.TaskID]
	if m == nil {
		m = map[string]time.Time{}
		d.first[doc.TaskID] = m
	}
	if _, seen := m[thing]; !seen {
		m[thing] = at
	}
}

// last returns how many agents received task's document and when the last
// of them did.
func (d *docTimes) last(task string) (int, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var latest time.Time
	for _, at := range d.first[task] {
		if at.After(latest) {
			latest = at
		}
	}
	return len(d.first[task]), latest
}

// fleet is a set of running simulated agents.
type fleet struct {
	agents []*loadgen.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// startFleet runs one simulated agent per identity, started 2 ms apart (a
// fleet comes up over time), and waits until every one is connected.
func startFleet(ctx context.Context, ids []*loadgen.Identity, cfg loadgen.Config) (*fleet, error) {
	fctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel, errs: make(chan error, len(ids))}
	for _, id := range ids {
		c := cfg
		c.Identity = id
		a := loadgen.New(c)
		f.agents = append(f.agents, a)
		f.wg.Go(func() {
			if err := a.Run(fctx); err != nil {
				f.errs <- err
			}
		})
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		select {
		case err := <-f.errs:
			f.stop()
			return nil, err
		case <-ctx.Done():
			f.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		connected := 0
		for _, a := range f.agents {
			if a.Stats().Connects > 0 {
				connected++
			}
		}
		if connected == len(ids) {
			return f, nil
		}
		if time.Now().After(deadline) {
			f.stop()
			return nil, fmt.Errorf("%d of %d agents connected after 10 minutes", connected, len(ids))
		}
	}
}

// stop ends every agent and waits for its reports in flight.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// healthAcked is the number of health reports the broker acknowledged.
func (f *fleet) healthAcked() int64 {
	var n int64
	for _, a := range f.agents {
		n += a.Stats().HealthAcked
	}
	return n
}

// lost is the number of reports the broker did not acknowledge.
func (f *fleet) lost() int64 {
	var s loadgen.Stats
	for _, a := range f.agents {
		s = s.Add(a.Stats())
	}
	return s.Sent - s.Acked
}

// fanoutGgfleet runs the enrolled simulated agents ids, then times one deployment task to all of them: from just before
// POST /deploymentTasks to the task seen Success (polled every 50 ms) and
// to the last agent receiving its document.
//
// With reports > 0 it then runs P5 on the same fleet (ingestGgfleet),
// reading the health rows from db.
func fanoutGgfleet(ctx context.Context, clients []*apiClient, ids []*loadgen.Identity, agentCfg loadgen.Config, reports int, db *sql.DB, pids []int, progress io.Writer, profileP5 func() (wait func() error)) (fanoutResult, error) {
	n := len(ids)
	names := make([]string, n)
	for i, id := range ids {
		names[i] = id.Name
	}
	times := &docTimes{}
	agentCfg.OnDocument = times.record
	progressf(progress, "  P4: connecting %d simulated agents", n)
	f, err := startFleet(ctx, ids, agentCfg)
	if err != nil {
		return fanoutResult{}, err
	}
	defer f.stop()
	settle(ctx)
	if err := clients[0].createTemplate(ctx, "FleetBench"); err != nil {
		return fanoutResult{}, err
	}
	progressf(progress, "  P4: deploying to %d agents", n)
	start := time.Now()
	id, err := clients[0].deploy(ctx, "FleetBench", names)
	if err != nil {
		return fanoutResult{}, err
	}
	var res fanoutResult
	for i := 0; ; i++ {
		done, status, err := clients[i%len(clients)].deploymentDone(ctx, id, n)
		if err != nil {
			return res, err
		}
		if done {
			res.Elapsed, res.Status = time.Since(start), status
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	var last time.Time
	res.Received, last = times.last(id)
	if res.Received > 0 {
		res.Notify = last.Sub(start)
	}
	if reports > 0 {
		progressf(progress, "  P5: %d agents × %d health reports through ggfleet", n, reports)
		wait := profileP5()
		res.Ingest, err = ingestGgfleet(ctx, f, reports, db, pids, clients)
		if werr := wait(); err == nil {
			err = werr
		}
		if err != nil {
			return res, fmt.Errorf("P5: %w", err)
		}
	}
	f.stop()
	res.Lost = f.lost()
	return res, nil
}

// enrollAll enrolls each core like ggagent (a device-made key, a CSR and a
// one-time token), eight at a time, spread over the replicas.
func enrollAll(ctx context.Context, clients []*apiClient, names []string) ([]*loadgen.Identity, error) {
	ids := make([]*loadgen.Identity, len(names))
	httpc := &http.Client{Timeout: time.Minute}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				c := clients[i%len(clients)]
				tok, err := c.enrollmentToken(ctx, names[i])
				var id *loadgen.Identity
				if err == nil {
					id, err = loadgen.Enroll(ctx, httpc, c.base, names[i], tok)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				ids[i] = id
				mu.Unlock()
			}
		})
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	return ids, firstErr
}

// settle lets the fleet's connect storm (connection reports, the first
// health reports) pass before a figure is timed.
func settle(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
}

// fanoutBound measures the physical bound of P4 on the same kind of MQTT
// broker: n simulated agents (the same loadgen code, apply delay and
// health interval) connected to a broker of the same software and
// configuration — ggfleet's embedded broker (mqttbus, in this process,
// every certificate admitted, handlers that only record) or Mosquitto with
// docs/mosquitto.md's configuration and ggfleet's client (external.Bus) —
// and the same exchange driven directly: one retained deployment document
// per agent published at once from 16 goroutines, IN_PROGRESS and
// SUCCEEDED back. It runs from the first publish to the last SUCCEEDED
// handled. No database, no task engine, no deployment logic. With
// reports > 0 on the embedded broker it then measures P5's embedded-broker
// figure: the same burst on the same fleet.
func fanoutBound(ctx context.Context, useMosquitto bool, dir string, n int, agentCfg loadgen.Config, reports int) (res fanoutResult, err error) {
	things := make([]string, n)
	for i := range things {
		things[i] = coreName(i)
	}
	p, err := benchpki.New("fleetbench bound CA", things)
	if err != nil {
		return res, err
	}
	var succeeded atomic.Int64
	var seenMu sync.Mutex
	seen := map[string]bool{}
	handlers := mqttbus.Handlers{OnDeploymentStatus: func(_ context.Context, thing string, m mqttmsg.DeploymentStatusMsg) {
		if m.Status != mqttmsg.StatusSucceeded {
			return
		}
		seenMu.Lock()
		defer seenMu.Unlock()
		if !seen[thing] {
			seen[thing] = true
			succeeded.Add(1)
		}
	}}
	bctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var publish func(ctx context.Context, thing string, payload []byte) error
	var endpoint string
	var roots *x509.CertPool
	quiet := slog.New(slog.DiscardHandler)
	if useMosquitto {
		mdir, addr, err := prepareMosquitto(dir)
		if err != nil {
			return res, err
		}
		if err := p.WriteMosquittoFiles(mdir); err != nil {
			return res, err
		}
		srvCA, err := os.ReadFile(filepath.Join(mdir, "server-ca.pem"))
		if err != nil {
			return res, err
		}
		mosq, err := mosquittotest.Launch(mdir, addr)
		if err != nil {
			return res, err
		}
		defer mosq.Stop()
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM(srvCA)
		bus, err := external.New(external.Config{URL: "mqtts://" + addr, ClientID: "ggfleet.broker.bound", Certificate: p.Broker,
			RootCAs: roots, Logger: quiet, Handlers: handlers})
		if err != nil {
			return res, err
		}
		wg.Go(func() { _ = bus.Run(bctx) })
		if err := waitUntil(ctx, time.Minute, bus.Connected); err != nil {
			return res, fmt.Errorf("ggfleet's client at Mosquitto: %w", err)
		}
		endpoint = addr
		publish = func(ctx context.Context, thing string, payload []byte) error {
			return bus.Publish(ctx, thing, mqttmsg.Deployments, payload, true)
		}
	} else {
		bus, err := mqttbus.New(mqttbus.Config{Listen: "127.0.0.1:0",
			Certificate: func(context.Context) (tls.Certificate, error) { return p.Server, nil },
			ClientCAs:   func(context.Context) (*x509.CertPool, error) { return p.Pool, nil },
			Authorizer:  benchpki.AllowAll{}, Logger: quiet, Handlers: handlers})
		if err != nil {
			return res, err
		}
		wg.Go(func() { _ = bus.Run(bctx) })
		if err := waitUntil(ctx, time.Minute, func() bool { return bus.Addr() != "" }); err != nil {
			return res, fmt.Errorf("embedded broker: %w", err)
		}
		endpoint, roots = bus.Addr(), p.Pool
		publish = func(ctx context.Context, thing string, payload []byte) error {
			return bus.Publish(ctx, thing, mqttmsg.Deployments, payload, true)
		}
	}
	ids := make([]*loadgen.Identity, n)
	for i := range ids {
		ids[i] = &loadgen.Identity{Name: p.Things[i], Cert: p.Agents[i], Roots: roots, Endpoint: endpoint}
	}
	times := &docTimes{}
	agentCfg.OnDocument = times.record
	f, err := startFleet(ctx, ids, agentCfg)
	if err != nil {
		return res, err
	}
	defer f.stop()
	settle(ctx)

	const task = "bound"
	start := time.Now()
	work := make(chan string)
	var pubErr atomic.Value
	var pubs sync.WaitGroup
	for range 16 {
		pubs.Go(func() {
			for thing := range work {
				payload, _ := json.Marshal(mqttmsg.DeploymentMsg{Version: mqttmsg.Version, DeploymentID: "bound-" + thing, TaskID: task,
					TemplateName: "FleetBench", TemplateVersion: 1, CreatedAt: time.Now().UTC(),
					Components: map[string]mqttmsg.ComponentSpec{"aws.greengrass.Cli": {ComponentVersion: "2.4.0"}}})
				if err := publish(ctx, thing, payload); err != nil {
					pubErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for _, thing := range p.Things {
		work <- thing
	}
	close(work)
	pubs.Wait()
	if err, _ := pubErr.Load().(error); err != nil {
		return res, fmt.Errorf("publish a document: %w", err)
	}
	if err := waitUntil(ctx, 10*time.Minute, func() bool { return succeeded.Load() == int64(n) }); err != nil {
		return res, fmt.Errorf("%d of %d agents reported SUCCEEDED: %w", succeeded.Load(), n, err)
	}
	res.Elapsed = time.Since(start)
	var last time.Time
	res.Received, last = times.last(task)
	res.Notify = last.Sub(start)
	if reports > 0 && !useMosquitto {
		if res.Ingest, _, err = burstFleet(ctx, f, reports); err != nil {
			return res, fmt.Errorf("P5 on the embedded broker: %w", err)
		}
	}
	f.stop()
	res.Lost = f.lost()
	return res, nil
}

// waitUntil polls cond every 5 ms until it holds or limit passes.
func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
