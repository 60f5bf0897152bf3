package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// device is an enrolled core's identity, held by a test in place of an agent.
type device struct {
	name     string
	cert     tls.Certificate
	serverCA *x509.CertPool
	endpoint string
}

// enrollDevice enrolls a core with a device-made key and returns its identity.
func (b *broker) enrollDevice(core string) *device {
	b.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	b.must(201, "POST", "/cores/"+core+"/enrollmentTokens", map[string]any{}).JSON(b.t, &tok)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: core}}, key)
	if err != nil {
		b.t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	r := b.doWith("POST", "/enroll", map[string]any{"coreName": core, "token": tok.Token, "csrPem": csr}, nil)
	if r.Status != 200 {
		b.t.Fatalf("enroll %s: %d %s", core, r.Status, r.Body)
	}
	var resp struct {
		CertificatePem         string `json:"certificatePem"`
		ServerCaCertificatePem string `json:"serverCaCertificatePem"`
		MqttEndpoint           string `json:"mqttEndpoint"`
	}
	r.JSON(b.t, &resp)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	cert, err := tls.X509KeyPair([]byte(resp.CertificatePem), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		b.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(resp.ServerCaCertificatePem)) {
		b.t.Fatal("no server CA in the enroll response")
	}
	if resp.MqttEndpoint != b.mqtt {
		b.t.Fatalf("mqttEndpoint = %q, want %q", resp.MqttEndpoint, b.mqtt)
	}
	return &device{name: core, cert: cert, serverCA: pool, endpoint: resp.MqttEndpoint}
}

// stub is an MQTT session standing in for ggagent.
type stub struct {
	t      testing.TB
	dev    *device
	client mqtt.Client
	mu     sync.Mutex
	docs   []map[string]any // deployment documents received
}

// connect opens an MQTT session as the device (client id = thing name),
// with a last will, and subscribes to its deployments topic.
func (d *device) connect(t testing.TB, clientID string) (*stub, error) {
	t.Helper()
	s := &stub{t: t, dev: d}
	opts := mqtt.NewClientOptions().AddBroker("tls://"+d.endpoint).SetClientID(clientID).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{d.cert}, RootCAs: d.serverCA, ServerName: "127.0.0.1"}).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10*time.Second).SetCleanSession(true).
		SetWill(topic(d.name, "connection"), `{"version":1,"state":"OFFLINE","timestamp":"2026-01-01T00:00:00Z"}`, 1, true)
	s.client = mqtt.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect as %s: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	return s, nil
}

func topic(thing, suffix string) string { return "ggfleet/things/" + thing + "/" + suffix }

// subscribeDeployments records every deployment document and, when answer is
// set, reports it as the agent would.
func (s *stub) subscribeDeployments(answer func(doc map[string]any) (status, detailed, reason string)) {
	s.t.Helper()
	tok := s.client.Subscribe(topic(s.dev.name, "deployments"), 1, func(_ mqtt.Client, m mqtt.Message) {
		var doc map[string]any
		if err := json.Unmarshal(m.Payload(), &doc); err != nil {
			return
		}
		s.mu.Lock()
		s.docs = append(s.docs, doc)
		s.mu.Unlock()
		if answer == nil {
			return
		}
		status, detailed, reason := answer(doc)
		go s.publish("deployments/status", map[string]any{"version": 1, "deploymentId": doc["deploymentId"], "taskId": doc["taskId"],
			"status": status, "detailedStatus": detailed, "reason": reason, "stage": "apply", "timestamp": time.Now().UTC()})
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("subscribe deployments: %v", tok.Error())
	}
}

func (s *stub) publish(suffix string, v any) error {
	payload, _ := json.Marshal(v)
	tok := s.client.Publish(topic(s.dev.name, suffix), 1, suffix == "connection", payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("publish %s: timed out", suffix)
	}
	return tok.Error()
}

// heartbeat publishes connection ONLINE and one health report.
func (s *stub) heartbeat(interval int, components ...string) {
	s.t.Helper()
	if err := s.publish("connection", map[string]any{"version": 1, "state": "ONLINE", "timestamp": time.Now().UTC()}); err != nil {
		s.t.Fatal(err)
	}
	comps := []map[string]any{}
	for i := 0; i+1 < len(components); i += 2 {
		comps = append(comps, map[string]any{"name": components[i], "version": components[i+1], "state": "RUNNING"})
	}
	if err := s.publish("health", map[string]any{"version": 1, "thingName": s.dev.name, "timestamp": time.Now().UTC(),
		"intervalSeconds": interval, "status": "HEALTHY", "nucleus": map[string]any{"state": "RUNNING", "version": "2.12.0"},
		"components": comps, "effectiveDeployments": []any{}, "platform": "linux", "architecture": "amd64",
		"agentVersion": "test", "uptimeSeconds": 5, "system": map[string]any{}, "certificateNotAfter": time.Now().Add(24 * time.Hour).UTC()}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stub) docCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.docs)
}
