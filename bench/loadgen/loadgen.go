// Package loadgen simulates ggagent fleets over MQTT, for the fault suite
// and the load test (e2e's TestFaults*, `make faults`). An Agent enrolls
// like ggagent (the key is made here; only a CSR goes to the broker),
// keeps one mutual-TLS MQTT session, publishes QoS 1 health reports every
// interval and answers deployment documents as a simulated runtime would:
// IN_PROGRESS, a delay, SUCCEEDED, never applying one deployment twice.
// It counts what it sent, what the broker acknowledged and what it applied,
// so a test can prove that no report was lost or duplicated.
package loadgen

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Identity is what enrollment gives a simulated core.
type Identity struct {
	Name     string
	Cert     tls.Certificate
	Roots    *x509.CertPool // verifies the broker's MQTT server certificate
	Endpoint string         // host:port of the MQTT listener
}

// Enroll makes a key and a CSR for core, spends token on POST /enroll and
// returns the identity.
func Enroll(ctx context.Context, client *http.Client, brokerURL, core, token string) (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: make key: %w", core, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: core}}, key)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: make CSR: %w", core, err)
	}
	body, _ := json.Marshal(map[string]string{"coreName": core, "token": token,
		"csrPem": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(brokerURL, "/")+"/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", core, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", core, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: read answer: %w", core, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll %s: %d %s", core, resp.StatusCode, data)
	}
	var out struct {
		CertificatePem         string `json:"certificatePem"`
		ServerCaCertificatePem string `json:"serverCaCertificatePem"`
		MqttEndpoint           string `json:"mqttEndpoint"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("enroll %s: decode answer: %w", core, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", core, err)
	}
	cert, err := tls.X509KeyPair([]byte(out.CertificatePem), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: issued certificate: %w", core, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(out.ServerCaCertificatePem)) {
		return nil, fmt.Errorf("enroll %s: no server CA certificate in the answer", core)
	}
	return &Identity{Name: core, Cert: cert, Roots: roots, Endpoint: out.MqttEndpoint}, nil
}

// Config sets up one simulated agent.
type Config struct {
	Identity       *Identity
	Endpoint       string        // MQTT host:port; default Identity.Endpoint (set it to go through a proxy)
	HealthInterval time.Duration // default 10s
	ApplyDelay     time.Duration // how long applying a deployment takes
	AckTimeout     time.Duration // a report not acknowledged within this is counted lost; default 2m
	ClockSkew      time.Duration // added to every timestamp the agent sends (a device with a wrong clock)
	// OnDocument, when set, is called with every deployment document the
	// agent receives and the time it arrived (benchmarks time the fan-out
	// with it). It runs on the MQTT client's goroutine: keep it short.
	OnDocument func(thing string, doc mqttmsg.DeploymentMsg, at time.Time)
}

// Stats are an agent's counters.
type Stats struct {
	Sent     int64 // QoS 1 reports published (health and deployment status)
	Acked    int64 // of those, acknowledged by the broker
	Lost     int64 // of those, failed or not acknowledged within AckTimeout
	Connects int64 // MQTT sessions established
	Applies  int64 // deployments applied (each deployment id once)
	Docs     int64 // deployment documents received
	// HealthAcked counts the acknowledged health reports (of Acked): what
	// the broker's handlers should have got (P5 checks it against
	// ggfleet's /metrics).
	HealthAcked int64
}

// Add sums counters.
func (s Stats) Add(o Stats) Stats {
	return Stats{Sent: s.Sent + o.Sent, Acked: s.Acked + o.Acked, Lost: s.Lost + o.Lost, Connects: s.Connects + o.Connects,
		Applies: s.Applies + o.Applies, Docs: s.Docs + o.Docs, HealthAcked: s.HealthAcked + o.HealthAcked}
}

// Agent is one simulated core.
type Agent struct {
	cfg   Config
	sent  atomic.Int64
	acked atomic.Int64
	lost  atomic.Int64
	conns atomic.Int64
	apps  atomic.Int64
	docs  atomic.Int64
	// healthAcked counts acknowledged health reports.
	healthAcked atomic.Int64

	mu      sync.Mutex
	applied map[string]int // applies per deployment id
	seq     int64

	bursts chan burstRequest // Burst's requests to Run
}

// burstRequest asks Run for a burst of health reports.
type burstRequest struct {
	reports int
	done    chan BurstResult
}

// BurstResult is what one agent's burst did.
type BurstResult struct {
	Acked int
	Lost  int
	// Last is the timestamp of the agent's last acknowledged report (what
	// the broker stores as the core's last health report).
	Last time.Time
}

// New makes an agent; Run starts it.
func New(cfg Config) *Agent {
	if cfg.Endpoint == "" {
		cfg.Endpoint = cfg.Identity.Endpoint
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 10 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 2 * time.Minute
	}
	return &Agent{cfg: cfg, applied: map[string]int{}, bursts: make(chan burstRequest)}
}

// Burst has a running agent publish reports health reports back to back,
// QoS 1 with one in flight (each waits for its PUBACK), on its session —
// a health ingestion benchmark's load. It returns when the last one was
// acknowledged or counted lost, or with ctx's error if Run is not serving.
func (a *Agent) Burst(ctx context.Context, reports int) (BurstResult, error) {
	req := burstRequest{reports: reports, done: make(chan BurstResult, 1)}
	select {
	case a.bursts <- req:
	case <-ctx.Done():
		return BurstResult{}, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r, nil
	case <-ctx.Done():
		return BurstResult{}, ctx.Err()
	}
}

// Name is the agent's thing name.
func (a *Agent) Name() string { return a.cfg.Identity.Name }

// now is the agent's clock, skewed as configured.
func (a *Agent) now() time.Time { return time.Now().Add(a.cfg.ClockSkew).UTC() }

// Stats returns the counters so far.
func (a *Agent) Stats() Stats {
	return Stats{Sent: a.sent.Load(), Acked: a.acked.Load(), Lost: a.lost.Load(), Connects: a.conns.Load(),
		Applies: a.apps.Load(), Docs: a.docs.Load(), HealthAcked: a.healthAcked.Load()}
}

// Applied returns how many times each deployment id was applied.
func (a *Agent) Applied() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int, len(a.applied))
	for k, v := range a.applied {
		out[k] = v
	}
	return out
}

// Run keeps the agent's session and reports until ctx ends, then waits for
// every report in flight to be acknowledged or counted lost, and
// disconnects. It returns an error only if the first connection attempt
// fails outright (not when it is merely slow: that is retried).
func (a *Agent) Run(ctx context.Context) error {
	name := a.cfg.Identity.Name
	host, _, _ := net.SplitHostPort(a.cfg.Endpoint)
	connected := make(chan struct{}, 1)
	docs := make(chan mqttmsg.DeploymentMsg, 16)
	onDoc := func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		doc, err := mqttmsg.Decode[mqttmsg.DeploymentMsg](m.Payload())
		if err != nil {
			return
		}
		a.docs.Add(1)
		if a.cfg.OnDocument != nil {
			a.cfg.OnDocument(name, doc, at)
		}
		select {
		case docs <- doc:
		case <-ctx.Done():
		}
	}
	will, _ := json.Marshal(mqttmsg.ConnectionMsg{Version: mqttmsg.Version, State: mqttmsg.Offline, Timestamp: a.now()})
	opts := mqtt.NewClientOptions().AddBroker("tls://"+a.cfg.Endpoint).SetClientID(name).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{a.cfg.Identity.Cert}, RootCAs: a.cfg.Identity.Roots, ServerName: host, MinVersion: tls.VersionTLS12}).
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(2*time.Second).SetMaxReconnectInterval(10*time.Second).
		SetConnectTimeout(30*time.Second).SetKeepAlive(30*time.Second).SetOrderMatters(false).
		SetWill(mqttmsg.Topic(name, mqttmsg.Connection), string(will), 1, true).
		SetOnConnectHandler(func(mqtt.Client) {
			a.conns.Add(1)
			select {
			case connected <- struct{}{}:
			default:
			}
		})
	client := mqtt.NewClient(opts)
	// With ConnectRetry the first connection is retried in the background
	// until it succeeds (a fleet starting at once queues at the broker);
	// only a configuration error ends the token early.
	if tok := client.Connect(); tok.WaitTimeout(time.Second) && tok.Error() != nil {
		client.Disconnect(0)
		return fmt.Errorf("agent %s: connect to %s: %w", name, a.cfg.Endpoint, tok.Error())
	}
	var inflight sync.WaitGroup
	defer func() {
		inflight.Wait()
		client.Disconnect(250)
	}()
	publish := func(suffix string, retained bool, v any) {
		payload, _ := json.Marshal(v)
		topic := mqttmsg.Topic(name, suffix)
		tok := client.Publish(topic, 1, retained, payload)
		a.sent.Add(1)
		inflight.Add(1)
		go func() { // owned by inflight: Run waits for every one
			defer inflight.Done()
			// Like ggagent's outbox: a report whose publish failed (the
			// connection dropped under it) is sent again until it is
			// acknowledged; it is lost only if AckTimeout passes first.
			deadline := time.Now().Add(a.cfg.AckTimeout)
			for {
				left := time.Until(deadline)
				if left > 0 && tok.WaitTimeout(left) && tok.Error() == nil {
					a.acked.Add(1)
					if suffix == mqttmsg.Health {
						a.healthAcked.Add(1)
					}
					return
				}
				if time.Until(deadline) <= time.Second {
					a.lost.Add(1)
					return
				}
				time.Sleep(time.Second)
				tok = client.Publish(topic, 1, retained, payload)
			}
		}()
	}
	healthMsg := func() mqttmsg.HealthMsg {
		a.mu.Lock()
		a.seq++
		seq := a.seq
		var eff []mqttmsg.EffectiveDeployment
		for id := range a.applied {
			eff = append(eff, mqttmsg.EffectiveDeployment{DeploymentID: id, Status: mqttmsg.StatusSucceeded})
		}
		a.mu.Unlock()
		return mqttmsg.HealthMsg{Version: mqttmsg.Version, ThingName: name, Timestamp: a.now(),
			IntervalSeconds: int(a.cfg.HealthInterval / time.Second), Status: mqttmsg.Healthy,
			Nucleus: mqttmsg.NucleusState{State: "RUNNING", Version: "2.12.0"}, Components: []mqttmsg.ComponentState{},
			EffectiveDeployments: eff, Platform: "linux", Architecture: "amd64", AgentVersion: "loadgen",
			UptimeSeconds: seq, CertificateNotAfter: a.cfg.Identity.Cert.Leaf.NotAfter}
	}
	health := func() { publish(mqttmsg.Health, false, healthMsg()) }
	burst := func(n int) BurstResult {
		var r BurstResult
		topic := mqttmsg.Topic(name, mqttmsg.Health)
		for range n {
			m := healthMsg()
			payload, _ := json.Marshal(m)
			a.sent.Add(1)
			tok := client.Publish(topic, 1, false, payload)
			if tok.WaitTimeout(a.cfg.AckTimeout) && tok.Error() == nil {
				a.acked.Add(1)
				a.healthAcked.Add(1)
				r.Acked++
				r.Last = m.Timestamp
			} else {
				a.lost.Add(1)
				r.Lost++
			}
		}
		return r
	}
	status := func(doc mqttmsg.DeploymentMsg, st, detail string) {
		publish(mqttmsg.DeploymentStatus, false, mqttmsg.DeploymentStatusMsg{Version: mqttmsg.Version, DeploymentID: doc.DeploymentID,
			TaskID: doc.TaskID, Status: st, DetailedStatus: detail, Stage: "apply", Timestamp: a.now()})
	}
	// The first report comes at a random point of the first interval, so a
	// fleet started at once does not report in lockstep.
	first := time.NewTimer(time.Duration(mrand.Int64N(int64(a.cfg.HealthInterval))))
	defer first.Stop()
	ticker := time.NewTicker(a.cfg.HealthInterval)
	ticker.Stop() // started after the first report
	defer ticker.Stop()
	var tick <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-connected:
			publish(mqttmsg.Connection, true, mqttmsg.ConnectionMsg{Version: mqttmsg.Version, State: mqttmsg.Online, Timestamp: a.now()})
			client.Subscribe(mqttmsg.Topic(name, mqttmsg.Deployments), 1, onDoc)
		case <-first.C:
			health()
			ticker.Reset(a.cfg.HealthInterval)
			tick = ticker.C
		case <-tick:
			health()
		case b := <-a.bursts:
			b.done <- burst(b.reports)
		case doc := <-docs:
			a.mu.Lock()
			done := a.applied[doc.DeploymentID] > 0
			a.mu.Unlock()
			if !done {
				status(doc, mqttmsg.StatusInProgress, "")
				select {
				case <-time.After(a.cfg.ApplyDelay):
				case <-ctx.Done():
					return nil // interrupted mid-apply: not applied
				}
				a.mu.Lock()
				a.applied[doc.DeploymentID]++
				a.mu.Unlock()
				a.apps.Add(1)
			}
			status(doc, mqttmsg.StatusSucceeded, mqttmsg.DetailSuccessful)
		}
	}
}

// Connect opens one bare agent-like MQTT session for id (client id = the
// thing name, a clean session, no retries, no reports): for benchmarks
// that time connections themselves, such as a reconnect storm.
func Connect(id *Identity) (mqtt.Client, error) {
	host, _, _ := net.SplitHostPort(id.Endpoint)
	opts := mqtt.NewClientOptions().AddBroker("tls://" + id.Endpoint).SetClientID(id.Name).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(60 * time.Second).
		SetKeepAlive(5 * time.Minute).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{id.Cert}, RootCAs: id.Roots, ServerName: host, MinVersion: tls.VersionTLS12})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(90 * time.Second) {
		return nil, fmt.Errorf("agent %s: connect to %s timed out", id.Name, id.Endpoint)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("agent %s: connect to %s: %w", id.Name, id.Endpoint, err)
	}
	return c, nil
}

// ErrLost is returned by Check when reports were lost.
var ErrLost = errors.New("reports were lost")

// Check reports an error if any report was lost or left unacknowledged.
func Check(s Stats) error {
	if s.Lost > 0 || s.Acked != s.Sent {
		return fmt.Errorf("%w: %d sent, %d acknowledged, %d lost", ErrLost, s.Sent, s.Acked, s.Lost)
	}
	return nil
}
