package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// TestAWSAgentHealthThroughIoTCore runs ggagent in aws mode against the
// fake's IoT Core data endpoint: it connects as <thing>-ggagent, its health
// reports reach GET /cores/{name} (connectivity and lastSeenAt; the status
// is Greengrass's in aws mode) through the broker's own IoT Core
// connection, and its certificate cannot publish on another thing's topics.
func TestAWSAgentHealthThroughIoTCore(t *testing.T) {
	b, fake := startAWSBroker(t)
	logBrokerOnFailure(t, b)
	const coreA, coreB = "aws-mqtt-a", "aws-mqtt-b"
	b.readyCore(coreA)
	b.readyCore(coreB)

	dir := b.enrollAgent(coreA)
	var id struct {
		Mode         string `json:"mode"`
		MQTTEndpoint string `json:"mqttEndpoint"`
	}
	if !readJSONFile(dir, identityFile, &id) || id.Mode != "aws" || id.MQTTEndpoint != fake.DataEndpoint() {
		t.Fatalf("identity = %+v, want mode aws at %s", id, fake.DataEndpoint())
	}
	// In aws mode the status comes from Greengrass (the nucleus registers
	// the core there) and the agent's reports give connectivity and
	// lastSeenAt.
	if err := fake.RegisterCoreDevice(coreA, awsfake.CoreHealthy); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a := startAgent(t, dir)
	b.waitOnline(coreA, start.Add(-time.Second))
	clients := fake.MQTTClients()
	if !slices.Contains(clients, coreA+"-ggagent") || !slices.ContainsFunc(clients, func(c string) bool { return strings.HasPrefix(c, "ggfleet-broker-") }) {
		t.Fatalf("clients at the data endpoint = %v, want %s-ggagent and a ggfleet-broker-* replica", clients, coreA)
	}

	// With the agent stopped, its certificate publishes a report on
	// coreB's topic: IoT Core refuses it and disconnects the client.
	a.kill()
	cl, lost := connectWithAgentCert(t, fake, dir, coreA+"-ggagent")
	report, err := json.Marshal(mqttmsg.HealthMsg{Version: 1, Timestamp: time.Now().UTC(), IntervalSeconds: 1, Status: mqttmsg.Healthy, UptimeSeconds: 5})
	if err != nil {
		t.Fatal(err)
	}
	cl.Publish(mqttmsg.Topic(coreB, mqttmsg.Health), 1, false, report)
	select {
	case <-lost:
	case <-time.After(time.Minute):
		t.Fatal("publishing on another thing's topic did not disconnect the agent's certificate")
	}
	want := "iot:Publish arn:aws:iot:" + awsfake.Region + ":" + awsfake.Account + ":topic/ggfleet/things/" + coreB + "/health client=" + coreA + "-ggagent"
	if d := fake.MQTTDenials(); !slices.Contains(d, want) {
		t.Fatalf("denials = %v, want %q", d, want)
	}
	time.Sleep(2 * time.Second) // a report that got through would be stored by now
	if d := b.device(coreB); d["connectivity"] != "OFFLINE" || d["lastSeenAt"] != nil {
		t.Fatalf("%s's device block took a report published by %s: %v", coreB, coreA, d)
	}
}

// connectWithAgentCert connects to the fake's data endpoint with the
// certificate and key of an enrolled state directory; lost is closed when
// the connection drops.
func connectWithAgentCert(t *testing.T, fake *awsfake.Fake, stateDir, clientID string) (paho.Client, chan struct{}) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "device.crt"), filepath.Join(stateDir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(stateDir, "server-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("server-ca.pem holds no certificate")
	}
	host, _, _ := strings.Cut(fake.DataEndpoint(), ":")
	lost := make(chan struct{})
	opts := paho.NewClientOptions().AddBroker("tls://" + fake.DataEndpoint()).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(30 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) }).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12})
	cl := paho.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("connect as %s with the agent's certificate: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return cl, lost
}

// TestAWSReplicasShareIoTCore runs two replicas on PostgreSQL against one
// fake: they share one broker identity, each connects as its own
// ggfleet-broker-<replica>, and IoT Core hands every agent report to
// exactly one of them, both taking a share.
func TestAWSReplicasShareIoTCore(t *testing.T) {
	dbURL, _ := testPostgresDB(t)
	fake := awsfake.New(t)
	fake.CreateBucket(awsBucket)
	setFakeAWSEnv(t)
	rootCA := filepath.Join(t.TempDir(), "iot-root-ca.pem")
	if err := os.WriteFile(rootCA, []byte(fake.RootCAPEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := writeSecretsKey(t, t.TempDir(), "secrets.key")
	common := []string{"--provider", "aws", "--aws-endpoint-url", fake.URL(), "--aws-iot-ca-file", rootCA,
		"--artifacts-bucket", awsBucket, "--database", dbURL, "--secrets-key-file", keyFile}
	r1 := startBroker(t, append(common, "--mqtt-client-id", "r1")...)
	r2 := startReplica(t, r1, append(common, "--mqtt-client-id", "r2")...)
	logBrokerOnFailure(t, r1)
	logBrokerOnFailure(t, r2)
	clients := fake.MQTTClients()
	if !slices.Contains(clients, "ggfleet-broker-r1") || !slices.Contains(clients, "ggfleet-broker-r2") {
		t.Fatalf("clients at the data endpoint = %v, want both replicas", clients)
	}
	if n := fake.Calls("RegisterCertificate") + fake.Calls("RegisterCertificateWithoutCA"); n != 1 {
		t.Fatalf("%d certificate registrations before any core: the replicas do not share one identity", n)
	}

	cores := []string{"aws-rep-a", "aws-rep-b"}
	var agents []*agentProc
	start := time.Now()
	for i, name := range cores {
		r1.readyCore(name)
		if err := fake.RegisterCoreDevice(name, awsfake.CoreHealthy); err != nil {
			t.Fatal(err)
		}
		enrollVia := []*broker{r1, r2}[i]
		agents = append(agents, startAgent(t, enrollVia.enrollAgent(name)))
	}
	for _, name := range cores {
		r2.waitOnline(name, start)
	}
	// Reports every second from each agent: wait until both replicas have
	// had some, then stop the agents so the count is final.
	health := func() []awsfake.MQTTMessage {
		var out []awsfake.MQTTMessage
		for _, m := range fake.MQTTMessages() {
			if strings.HasSuffix(m.Topic, "/"+mqttmsg.Health) {
				out = append(out, m)
			}
		}
		return out
	}
	perReplica := func() (one, two int) {
		for _, m := range health() {
			one += m.Deliveries["ggfleet-broker-r1"]
			two += m.Deliveries["ggfleet-broker-r2"]
		}
		return one, two
	}
	waitFor(t, 2*time.Minute, "10 reports, both replicas receiving some", func() bool {
		one, two := perReplica()
		return one > 0 && two > 0 && one+two >= 10
	})
	for _, a := range agents {
		a.kill()
	}
	time.Sleep(2 * time.Second) // deliveries in flight end
	msgs := health()
	for _, m := range msgs {
		toBroker := m.Deliveries["ggfleet-broker-r1"] + m.Deliveries["ggfleet-broker-r2"]
		if toBroker != m.Published {
			t.Errorf("report on %s published %d times went to the replicas %d times (%v)", m.Topic, m.Published, toBroker, m.Deliveries)
		}
	}
	one, two := perReplica()
	t.Logf("%d distinct health reports; replica 1 handled %d, replica 2 %d", len(msgs), one, two)
}
