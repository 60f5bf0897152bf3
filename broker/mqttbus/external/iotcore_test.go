package external_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/shared/certs"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// iotEnv is the awsfake's IoT Core data endpoint, the aws provider on it
// and the broker's CA, as the broker runs them in aws mode.
type iotEnv struct {
	fake      *awsfake.Fake
	prov      *awsprov.Provider
	db        *sqlstore.DB
	authority *ca.Authority
	key       []byte
	roots     *x509.CertPool
}

func newIoTEnv(t *testing.T) *iotEnv {
	t.Helper()
	ctx := context.Background()
	prov, fake := awstest.NewProvider(t, nil)
	b := awstest.NewBroker(t)
	db, authority, def, key := b.DB, b.Authority, b.Default, b.SecretsKey
	if err := prov.RegisterCA(ctx, authority, def.ID, def.CertificatePem); err != nil {
		t.Fatal(err)
	}
	if _, err := prov.PutPolicy(ctx, awsprov.AgentPolicyName, awsprov.AgentPolicyDocument); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(fake.RootCAPEM()))
	return &iotEnv{fake: fake, prov: prov, db: db, authority: authority, key: key, roots: roots}
}

// startBroker runs a replica's consumer with the broker identity until the
// test ends and waits until it is subscribed.
func (e *iotEnv) startBroker(t *testing.T, replica string, h mqttbus.Handlers) *external.Bus {
	t.Helper()
	cert, err := e.prov.BrokerIdentity(context.Background(), awsprov.IdentityConfig{Store: e.db, Issuer: e.authority, SecretsKey: e.key})
	if err != nil {
		t.Fatal(err)
	}
	b, err := external.New(external.Config{URL: "mqtts://" + e.fake.DataEndpoint(), ClientID: awsprov.BrokerClientIDPrefix + replica,
		Certificate: cert, RootCAs: e.roots, Handlers: h, Logger: slog.New(slog.DiscardHandler), ConnectRetry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, replica+" subscribed", b.Connected)
	return b
}

// enrollAgent gives thing a certificate as POST /enroll does in aws mode:
// issued by the broker's CA, registered ACTIVE, with the agent policy.
func (e *iotEnv) enrollAgent(t *testing.T, thing string) (tls.Certificate, string) {
	t.Helper()
	ctx := context.Background()
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, caPEM, err := e.authority.Issue(ctx, "", key.Public(), pkix.Name{CommonName: thing}, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.prov.RegisterCertificate(ctx, certPEM, caPEM, "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.prov.AttachPolicy(ctx, awsprov.AgentPolicyName, id); err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, id
}

// agent connects to the data endpoint with clientID; err is the connect
// error. lost is closed when the connection drops.
func (e *iotEnv) agent(t *testing.T, clientID string, cert tls.Certificate) (c paho.Client, lost chan struct{}, err error) {
	t.Helper()
	lost = make(chan struct{})
	opts := paho.NewClientOptions().AddBroker("tls://" + e.fake.DataEndpoint()).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) }).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: e.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	c = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitLimit) {
		return nil, nil, context.DeadlineExceeded
	}
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, lost, nil
}

// The broker consumes an agent's health through its own IoT Core
// connection; the agent keeps to its own client id and topics, and a
// deactivated certificate cannot connect.
func TestIoTCoreConsumer(t *testing.T) {
	e := newIoTEnv(t)
	var r recorder
	var patchEvents []string
	var mu sync.Mutex
	h := r.handlers()
	h.OnMessage = func(_ context.Context, thing, suffix string, _ []byte) {
		mu.Lock()
		defer mu.Unlock()
		patchEvents = append(patchEvents, thing+" "+suffix)
	}
	bus := e.startBroker(t, "r1", h)
	cert, certID := e.enrollAgent(t, "core-1")

	if _, _, err := e.agent(t, "core-1", cert); err == nil {
		t.Fatal("the agent connected with the nucleus's client id core-1")
	}
	a, lost, err := e.agent(t, "core-1-ggagent", cert)
	if err != nil {
		t.Fatalf("core-1-ggagent cannot connect: %v", err)
	}
	publish(t, a, mqttmsg.Topic("core-1", mqttmsg.Health), false, health(7))
	waitUntil(t, "core-1's report", func() bool { return len(r.reports("core-1")) == 1 })

	// A patch job goes out through the broker's connection, and the
	// agent's patch events come back through it.
	jobs := make(chan string, 1)
	if tok := a.Subscribe(mqttmsg.Prefix+"core-1/"+patchmsg.StartTopic("+"), 1, func(_ paho.Client, m paho.Message) { jobs <- m.Topic() }); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("agent subscribe: %v", tok.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := bus.Publish(ctx, "core-1", patchmsg.StartTopic("p1"), []byte(`{"version":1}`), false); err != nil {
		t.Fatal(err)
	}
	select {
	case topic := <-jobs:
		if topic != mqttmsg.Prefix+"core-1/patches/p1/start" {
			t.Fatalf("agent got %s", topic)
		}
	case <-time.After(waitLimit):
		t.Fatal("the patch job did not reach the agent")
	}
	if tok := a.Publish(mqttmsg.Prefix+"core-1/"+patchmsg.EventsTopic("p1"), 1, false, []byte(`{}`)); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("agent publish: %v", tok.Error())
	}
	waitUntil(t, "the patch event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(patchEvents) == 1 && patchEvents[0] == "core-1 patches/p1/events"
	})

	// Publishing on another thing's topic is refused: IoT Core disconnects.
	a.Publish(mqttmsg.Topic("core-2", mqttmsg.Health), 1, false, []byte(`{}`))
	select {
	case <-lost:
	case <-time.After(waitLimit):
		t.Fatal("the agent was not disconnected after publishing on core-2's topic")
	}
	if d := strings.Join(e.fake.MQTTDenials(), "\n"); !strings.Contains(d, "iot:Publish arn:aws:iot:"+awsfake.Region+":"+awsfake.Account+":topic/ggfleet/things/core-2/health client=core-1-ggagent") {
		t.Fatalf("denials = %s", d)
	}
	if got := r.reports("core-2"); len(got) != 0 {
		t.Fatalf("core-2 reports reached the broker: %v", got)
	}

	// Deactivated, the certificate cannot connect any more.
	sdk := iot.New(iot.Options{Region: awsfake.Region, BaseEndpoint: aws.String(e.fake.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
	if _, err := sdk.UpdateCertificate(context.Background(), &iot.UpdateCertificateInput{CertificateId: &certID, NewStatus: iottypes.CertificateStatusInactive}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.agent(t, "core-1-ggagent", cert); err == nil {
		t.Fatal("a deactivated certificate connected")
	}
}

// A dropped connection is re-established with backoff, and reports flow
// again after.
func TestIoTCoreReconnects(t *testing.T) {
	e := newIoTEnv(t)
	var r recorder
	bus := e.startBroker(t, "r1", r.handlers())
	cert, _ := e.enrollAgent(t, "core-1")
	a, _, err := e.agent(t, "core-1-ggagent", cert)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.fake.MQTTConnects("ggfleet-broker-r1"); n != 1 {
		t.Fatalf("%d broker connections before the drop", n)
	}
	if !e.fake.DropConnection("ggfleet-broker-r1") {
		t.Fatal("the broker was not connected")
	}
	waitUntil(t, "the bus to reconnect", func() bool { return e.fake.MQTTConnects("ggfleet-broker-r1") == 2 })
	waitUntil(t, "the bus to subscribe again", bus.Connected)
	publish(t, a, mqttmsg.Topic("core-1", mqttmsg.Health), false, health(9))
	waitUntil(t, "the report after the reconnect", func() bool { return len(r.reports("core-1")) == 1 })
}

// Two replicas share the subscriptions at IoT Core: every report is
// handled once, and both take a share.
func TestIoTCoreReplicasShare(t *testing.T) {
	e := newIoTEnv(t)
	var r1, r2 recorder
	e.startBroker(t, "r1", r1.handlers())
	e.startBroker(t, "r2", r2.handlers())
	const n = 40
	for i := range 4 {
		thing := "core-" + string(rune('a'+i))
		cert, _ := e.enrollAgent(t, thing)
		a, _, err := e.agent(t, thing+"-ggagent", cert)
		if err != nil {
			t.Fatal(err)
		}
		for u := int64(1); u <= n/4; u++ {
			publish(t, a, mqttmsg.Topic(thing, mqttmsg.Health), false, health(u))
		}
	}
	total := func() int {
		sum := 0
		for i := range 4 {
			thing := "core-" + string(rune('a'+i))
			sum += len(r1.reports(thing)) + len(r2.reports(thing))
		}
		return sum
	}
	waitUntil(t, "every report handled", func() bool { return total() >= n })
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	if got := total(); got != n {
		t.Fatalf("%d reports handled, want %d (each once)", got, n)
	}
	var one, two int
	for i := range 4 {
		thing := "core-" + string(rune('a'+i))
		one += len(r1.reports(thing))
		two += len(r2.reports(thing))
	}
	if one == 0 || two == 0 {
		t.Fatalf("replicas handled %d and %d reports: the subscription is not shared", one, two)
	}
}
