// Command mqttbench compares the embedded MQTT broker with Mosquitto run
// with docs/mosquitto.md's configuration, and prints the figures
// BENCHMARKS.md reports as a Markdown fragment:
//
//   - P5, health ingestion: -publishers agents each publish -messages
//     health reports at QoS 1, one at a time (waiting for each PUBACK);
//     the acked rate at the agents, and the rate at which the broker's
//     handlers got them (the embedded broker's handlers, or an
//     external.Bus subscribed through Mosquitto with shared subscriptions).
//     The handlers only count: this measures the MQTT path, not the
//     database.
//   - P7, reconnect storm: -agents agents connect at once over mutual TLS
//     (-concurrency at a time), each a full TLS handshake and MQTT
//     CONNECT/CONNACK; connects per second, next to the rate of bare TLS
//     handshakes against a Go tls.Listener in this process with the same
//     certificates.
//
// Everything runs on 127.0.0.1 with certificates made here (EC P-256); the
// embedded broker's certificate check is an always-yes authorizer (no
// database). It needs mosquitto installed (apt-get install mosquitto) and
// the source tree (it reads docs/mosquitto). It asserts nothing.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/bench/benchpki"
	"github.com/ggfleet/ggfleet/bench/loadgen"
	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

func main() {
	agents := flag.Int("agents", 2000, "agents in the reconnect storm (P7)")
	concurrency := flag.Int("concurrency", 64, "connects in flight at once (P7)")
	publishers := flag.Int("publishers", 100, "agents publishing health (P5)")
	messages := flag.Int("messages", 100, "health reports per publishing agent (P5)")
	out := flag.String("out", "", "also write the Markdown fragment to this file")
	flag.StringVar(&p5Profile, "cpuprofile", "", "write a CPU profile of P5 on the embedded broker (broker and load generator: one process) to this file")
	flag.Parse()
	if err := run(*agents, *concurrency, *publishers, *messages, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(1)
	}
}

func run(agents, concurrency, publishers, messages int, outPath string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	things := make([]string, max(agents, publishers))
	for i := range things {
		things[i] = fmt.Sprintf("bench-%05d", i)
	}
	pki, err := benchpki.New("mqttbench CA", things)
	if err != nil {
		return err
	}

	// The embedded broker.
	var embeddedHandled atomic.Int64
	emb, err := mqttbus.New(mqttbus.Config{
		Listen:      "127.0.0.1:0",
		Certificate: func(context.Context) (tls.Certificate, error) { return pki.Server, nil },
		ClientCAs:   func(context.Context) (*x509.CertPool, error) { return pki.Pool, nil },
		Authorizer:  benchpki.AllowAll{},
		Logger:      slog.New(slog.DiscardHandler),
		Handlers: mqttbus.Handlers{OnHealth: func(context.Context, string, mqttmsg.HealthMsg) {
			embeddedHandled.Add(1)
		}},
	})
	if err != nil {
		return err
	}
	embDone := make(chan error, 1)
	go func() { embDone <- emb.Run(ctx) }()
	defer func() { cancel(); <-embDone }()
	for emb.Addr() == "" {
		select {
		case err := <-embDone:
			return fmt.Errorf("embedded broker: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}

	// Mosquitto with the documented configuration, and ggfleet's client.
	dir, err := os.MkdirTemp("", "mqttbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	srvCA, err := mosquittotest.WriteServerTLS(dir)
	if err != nil {
		return err
	}
	if err := pki.WriteMosquittoFiles(dir); err != nil {
		return err
	}
	addr, err := mosquittotest.PickAddr()
	if err != nil {
		return err
	}
	mosq, err := mosquittotest.Launch(dir, addr)
	if err != nil {
		return err
	}
	defer mosq.Stop()
	mosqRoots := x509.NewCertPool()
	mosqRoots.AppendCertsFromPEM(srvCA)
	var extHandled atomic.Int64
	ext, err := external.New(external.Config{URL: mosq.URL(), ClientID: "ggfleet.broker.bench", Certificate: pki.Broker, RootCAs: mosqRoots,
		Logger: slog.New(slog.DiscardHandler), Handlers: mqttbus.Handlers{OnHealth: func(context.Context, string, mqttmsg.HealthMsg) {
			extHandled.Add(1)
		}}})
	if err != nil {
		return err
	}
	extCtx, extCancel := context.WithCancel(ctx)
	extDone := make(chan error, 1)
	go func() { extDone <- ext.Run(extCtx) }()
	defer func() { extCancel(); <-extDone }()
	if err := waitFor(30*time.Second, ext.Connected); err != nil {
		return fmt.Errorf("ggfleet's client at Mosquitto: %w", err)
	}

	embTarget := target{name: "embedded (mochi-mqtt)", addr: emb.Addr(), roots: pki.Pool, handled: &embeddedHandled}
	mosqTarget := target{name: "Mosquitto " + mosquittoVersion(mosq) + " + ggfleet shared-subscription client", addr: addr, roots: mosqRoots, handled: &extHandled}

	var md []string
	md = append(md, fmt.Sprintf("Measured %s on %s/%s, %d CPUs, Go %s.\n", time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()))
	md = append(md, fmt.Sprintf("### P5: health ingestion (%d agents × %d reports, QoS 1, one in flight per agent)\n", publishers, messages))
	md = append(md, "| broker | acked reports/s at the agents | handled reports/s at ggfleet | handled |", "|---|---|---|---|")
	for _, tg := range []target{embTarget, mosqTarget} {
		fmt.Fprintf(os.Stderr, "P5 %s ...\n", tg.name)
		stop, err := profileP5(tg == embTarget)
		if err != nil {
			return err
		}
		r, err := ingest(tg, pki, publishers, messages)
		stop()
		if err != nil {
			return fmt.Errorf("P5 %s: %w", tg.name, err)
		}
		md = append(md, fmt.Sprintf("| %s | %.0f | %.0f | %d/%d |", tg.name, r.ackedRate, r.handledRate, r.handled, publishers*messages))
	}

	md = append(md, "", fmt.Sprintf("### P7: reconnect storm (%d agents over mutual TLS, %d connecting at once)\n", agents, concurrency))
	md = append(md, "| what | connects/s | failed | wall time |", "|---|---|---|---|")
	fmt.Fprintln(os.Stderr, "P7 bare TLS handshakes ...")
	stormPKI := *pki
	stormPKI.Things, stormPKI.Agents = pki.Things[:agents], pki.Agents[:agents]
	tlsRate, tlsFailed, tlsWall, err := stormPKI.HandshakeStorm(concurrency)
	if err != nil {
		return err
	}
	md = append(md, fmt.Sprintf("| bare TLS handshakes (Go tls.Listener, in process) | %.0f | %d | %s |", tlsRate, tlsFailed, tlsWall.Round(time.Millisecond)))
	for _, tg := range []target{embTarget, mosqTarget} {
		fmt.Fprintf(os.Stderr, "P7 %s ...\n", tg.name)
		rate, failed, wall := storm(tg, pki, agents, concurrency)
		md = append(md, fmt.Sprintf("| %s: TLS + CONNECT/CONNACK | %.0f | %d | %s |", tg.name, rate, failed, wall.Round(time.Millisecond)))
	}
	text := ""
	for _, l := range md {
		text += l + "\n"
	}
	fmt.Print(text)
	if outPath != "" {
		if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
			return err
		}
		return os.WriteFile(outPath, []byte(text), 0o644)
	}
	return nil
}

// p5Profile is where -cpuprofile writes P5's profile on the embedded broker.
var p5Profile string

// profileP5 starts the CPU profile -cpuprofile asks for when embedded, and
// returns what stops it.
func profileP5(embedded bool) (stop func(), err error) {
	if p5Profile == "" || !embedded {
		return func() {}, nil
	}
	f, err := os.Create(p5Profile)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// target is one broker under test.
type target struct {
	name    string
	addr    string
	roots   *x509.CertPool
	handled *atomic.Int64
}

// ingestResult is P5's figures for one broker.
type ingestResult struct {
	ackedRate, handledRate float64
	handled                int64
}

// ingest connects the publishers, then has each publish its reports one
// at a time.
func ingest(tg target, pki *benchpki.PKI, publishers, messages int) (ingestResult, error) {
	clients := make([]paho.Client, publishers)
	for i := range clients {
		c, err := connect(tg, pki.Things[i], pki.Agents[i])
		if err != nil {
			return ingestResult{}, fmt.Errorf("connect %s: %w", pki.Things[i], err)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	payload, _ := json.Marshal(mqttmsg.HealthMsg{Version: 1, Timestamp: time.Now().UTC(), IntervalSeconds: 60, Status: mqttmsg.Healthy})
	before := tg.handled.Load()
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := mqttmsg.Topic(pki.Things[i], mqttmsg.Health)
			for range messages {
				tok := c.Publish(topic, 1, false, payload)
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	acked := time.Since(start)
	want := before + int64(publishers*messages)
	_ = waitFor(60*time.Second, func() bool { return tg.handled.Load() >= want })
	handledWall := time.Since(start)
	n := int64(publishers*messages) - failed.Load()
	got := tg.handled.Load() - before
	if failed.Load() > 0 {
		return ingestResult{}, fmt.Errorf("%d publishes were not acknowledged", failed.Load())
	}
	return ingestResult{ackedRate: float64(n) / acked.Seconds(), handledRate: float64(got) / handledWall.Seconds(), handled: got}, nil
}

// storm connects every agent, concurrency at a time, and keeps them
// connected until all have tried; then disconnects them.
func storm(tg target, pki *benchpki.PKI, agents, concurrency int) (rate float64, failed int, wall time.Duration) {
	clients := make([]paho.Client, agents)
	var nFailed atomic.Int64
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := connect(tg, pki.Things[i], pki.Agents[i])
			if err != nil {
				nFailed.Add(1)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	wall = time.Since(start)
	for _, c := range clients {
		if c != nil {
			c.Disconnect(0)
		}
	}
	ok := agents - int(nFailed.Load())
	return float64(ok) / wall.Seconds(), int(nFailed.Load()), wall
}

// connect opens an agent-like MQTT session (client id = thing) to tg.
func connect(tg target, thing string, cert tls.Certificate) (paho.Client, error) {
	return loadgen.Connect(&loadgen.Identity{Name: thing, Cert: cert, Roots: tg.roots, Endpoint: tg.addr})
}

func waitFor(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// mosquittoVersion reads the version from Mosquitto's start-up log line.
func mosquittoVersion(s *mosquittotest.Server) string {
	var v string
	if _, err := fmt.Sscanf(afterPrefix(s.Log(), "mosquitto version "), "%s", &v); err != nil {
		return ""
	}
	return v
}

func afterPrefix(s, p string) string {
	for i := 0; i+len(p) <= len(s); i++ {
		if s[i:i+len(p)] == p {
			return s[i+len(p):]
		}
	}
	return ""
}
