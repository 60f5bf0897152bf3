package awsfake

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// mqttEndpoint is the fake's AWS IoT Core data endpoint: an MQTT broker
// (mochi, in process) on a loopback port behind TLS with a server
// certificate from the fake's own "Amazon root". Like IoT Core it admits
// a client only with a certificate registered and ACTIVE in the fake's
// registry, and authorizes every connect, publish, subscribe and receive
// with the policies attached to that certificate (Allowed).
type mqttEndpoint struct {
	srv     *mqtt.Server
	addr    string // host:port
	rootPEM string

	mu       sync.Mutex
	conns    map[string]mqttConn // client id -> its certificate
	connects map[string]int      // client id -> connections admitted
	denials  []string
	traffic  map[messageKey]*MQTTMessage
}

// messageKey identifies a distinct message: its topic and payload.
type messageKey struct {
	topic   string
	payload [sha256.Size]byte
}

// MQTTMessage is one distinct message (topic and payload) that clients
// published to the data endpoint: how many times it was accepted, and
// how many times it went out to each client.
type MQTTMessage struct {
	Topic      string
	Published  int
	Deliveries map[string]int // client id -> deliveries
}

// mqttConn is what the endpoint knows of a connected client.
type mqttConn struct {
	client             *mqtt.Client
	certID, commonName string
	filters            map[string]bool // topic filters its SUBSCRIBEs were allowed
}

// DataEndpoint is the address of the fake's MQTT data endpoint
// (127.0.0.1:port), which DescribeEndpoint iot:Data-ATS returns. Real AWS
// returns a host name and clients use port 8883; the fake's port is picked
// at random, so its address carries it.
func (f *Fake) DataEndpoint() string { return f.mqtt.addr }

// RootCAPEM is the PEM of the CA that signed the data endpoint's server
// certificate: the fake's stand-in for Amazon Root CA 1.
func (f *Fake) RootCAPEM() string { return f.mqtt.rootPEM }

// MQTTClients lists the client ids connected to the data endpoint, sorted.
func (f *Fake) MQTTClients() []string {
	f.mqtt.mu.Lock()
	defer f.mqtt.mu.Unlock()
	ids := make([]string, 0, len(f.mqtt.conns))
	for id := range f.mqtt.conns {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// MQTTConnects is how many connections of clientID the data endpoint
// admitted.
func (f *Fake) MQTTConnects(clientID string) int {
	f.mqtt.mu.Lock()
	defer f.mqtt.mu.Unlock()
	return f.mqtt.connects[clientID]
}

// DropConnection closes the connection of an MQTT client, as IoT Core's
// DeleteConnection does (and as a network fault or a service restart
// would); it reports whether the client was connected.
func (f *Fake) DropConnection(clientID string) bool {
	cl, ok := f.mqtt.srv.Clients.Get(clientID)
	if !ok || cl.Closed() {
		return false
	}
	cl.Stop(errors.New("connection dropped by the test"))
	return true
}

// MQTTMessages lists the messages published to the data endpoint with
// their deliveries, by topic.
func (f *Fake) MQTTMessages() []MQTTMessage {
	f.mqtt.mu.Lock()
	defer f.mqtt.mu.Unlock()
	out := make([]MQTTMessage, 0, len(f.mqtt.traffic))
	for _, m := range f.mqtt.traffic {
		c := *m
		c.Deliveries = maps.Clone(m.Deliveries)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// MQTTDenials lists the requests the data endpoint refused, oldest first,
// as "ACTION RESOURCE-ARN client=ID".
func (f *Fake) MQTTDenials() []string {
	f.mqtt.mu.Lock()
	defer f.mqtt.mu.Unlock()
	return append([]string(nil), f.mqtt.denials...)
}

// routeMQTTControl serves GET /_fake/dataEndpoint: the data endpoint's
// address, the PEM of the root that signed its certificate (for a broker
// or agent run against a standalone fake), the clients connected and the
// requests refused.
func (f *Fake) routeMQTTControl(mux *http.ServeMux) {
	mux.HandleFunc("GET /_fake/dataEndpoint", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"address": f.DataEndpoint(), "rootCaPem": f.RootCAPEM(),
			"clients": f.MQTTClients(), "denials": f.MQTTDenials()})
	})
}

// startMQTT starts the data endpoint on host (port chosen at random).
func (f *Fake) startMQTT(host string) error {
	root, rootKey, rootPEM, err := newFakeRoot()
	if err != nil {
		return err
	}
	serverCert, err := newServerCert(root, rootKey, []string{"localhost", "127.0.0.1", "::1", host,
		EndpointPrefix + "-ats.iot." + Region + ".amazonaws.com"})
	if err != nil {
		return err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.TopicAliasMaximum = 0 // an alias would let a topic skip the policy check
	e := &mqttEndpoint{rootPEM: rootPEM, conns: map[string]mqttConn{}, connects: map[string]int{}, traffic: map[messageKey]*MQTTMessage{}}
	e.srv = mqtt.New(&mqtt.Options{Capabilities: caps, Logger: slog.New(slog.DiscardHandler)})
	if err := e.srv.AddHook(&iotHook{f: f, e: e}, nil); err != nil {
		return fmt.Errorf("awsfake: mqtt hook: %w", err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "iot-data", Address: net.JoinHostPort(host, "0"), TLSConfig: &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{serverCert},
		// IoT Core takes any client certificate and looks it up in the
		// registry (certificates registered without a CA included).
		ClientAuth: tls.RequireAnyClientCert,
	}})
	if err := e.srv.AddListener(l); err != nil {
		return fmt.Errorf("awsfake: mqtt listen on %s: %w", host, err)
	}
	if err := e.srv.Serve(); err != nil {
		_ = e.srv.Close()
		return fmt.Errorf("awsfake: mqtt serve: %w", err)
	}
	e.addr = l.Address()
	f.mqtt = e
	return nil
}

func (e *mqttEndpoint) close() {
	_ = e.srv.Close()
}

// newFakeRoot makes the fake's root CA.
func newFakeRoot() (*x509.Certificate, *ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", fmt.Errorf("awsfake: root key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"awsfake"}, CommonName: "awsfake Amazon Root CA 1"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("awsfake: root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, "", err
	}
	return root, key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// newServerCert issues the data endpoint's TLS certificate for hosts.
func newServerCert(root *x509.Certificate, rootKey *ecdsa.PrivateKey, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("awsfake: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: hosts[len(hosts)-1]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("awsfake: server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// iotHook enforces IoT Core's authentication and policies on the mochi
// server.
type iotHook struct {
	mqtt.HookBase
	f *Fake
	e *mqttEndpoint
}

func (h *iotHook) ID() string { return "awsfake-iot" }

func (h *iotHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnDisconnect,
		mqtt.OnPublish, mqtt.OnPacketSent}, b) >= 0
}

// OnPublish counts a PUBLISH the policies allowed (mochi checks them
// before).
func (h *iotHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.e.mu.Lock()
	h.e.message(pk).Published++
	h.e.mu.Unlock()
	return pk, nil
}

// OnPacketSent counts the deliveries of published messages.
func (h *iotHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.e.mu.Lock()
	h.e.message(pk).Deliveries[cl.ID]++
	h.e.mu.Unlock()
}

// message is pk's traffic record; callers hold e.mu.
func (e *mqttEndpoint) message(pk packets.Packet) *MQTTMessage {
	k := messageKey{topic: pk.TopicName, payload: sha256.Sum256(pk.Payload)}
	m := e.traffic[k]
	if m == nil {
		m = &MQTTMessage{Topic: pk.TopicName, Deliveries: map[string]int{}}
		e.traffic[k] = m
	}
	return m
}

// OnConnectAuthenticate admits a client whose certificate is registered
// and ACTIVE and whose policies allow iot:Connect for its client id.
func (h *iotHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	conn, ok := cl.Net.Conn.(*tls.Conn)
	if !ok || len(conn.ConnectionState().PeerCertificates) == 0 {
		return false
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	c := mqttConn{client: cl, certID: certID(leaf), commonName: leaf.Subject.CommonName, filters: map[string]bool{}}
	h.f.mu.Lock()
	rec := h.f.iot.certs[c.certID]
	active := rec != nil && rec.status == "ACTIVE"
	h.f.mu.Unlock()
	if !active {
		h.e.deny("CONNECT", "certificate "+c.certID+" is not registered and ACTIVE", cl.ID)
		return false
	}
	if !h.allowed(c, cl.ID, ActionConnect, arn("client/"+cl.ID)) {
		return false
	}
	h.e.mu.Lock()
	h.e.conns[cl.ID] = c
	h.e.connects[cl.ID]++
	h.e.mu.Unlock()
	return true
}

// OnSubscribe checks iot:Subscribe for every filter (shared ones as
// topicfilter/$share/GROUP/FILTER); a refused filter disconnects the
// client, as IoT Core does.
func (h *iotHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	c, ok := h.e.conn(cl.ID)
	if !ok {
		return pk
	}
	for _, sub := range pk.Filters {
		if !h.allowed(c, cl.ID, ActionSubscribe, arn("topicfilter/"+sub.Filter)) {
			cl.Stop(packets.ErrNotAuthorized)
			return pk
		}
		h.e.mu.Lock()
		c.filters[sub.Filter] = true
		h.e.mu.Unlock()
	}
	return pk
}

// OnACLCheck authorizes a PUBLISH (iot:Publish; refused, the client is
// disconnected) and the delivery of a message to a client (iot:Receive;
// refused, the message is not delivered). mochi also asks for each
// subscribed filter, which OnSubscribe has already allowed.
func (h *iotHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	c, ok := h.e.conn(cl.ID)
	if !ok {
		return false
	}
	if write {
		return h.allowed(c, cl.ID, ActionPublish, arn("topic/"+topic))
	}
	h.e.mu.Lock()
	filter := c.filters[topic]
	h.e.mu.Unlock()
	if filter {
		return true
	}
	return h.allowed(c, cl.ID, ActionReceive, arn("topic/"+topic))
}

// OnDisconnect forgets the connection, unless a newer one with the same
// client id has taken its place.
func (h *iotHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if c, ok := h.e.conns[cl.ID]; ok && c.client == cl {
		delete(h.e.conns, cl.ID)
	}
}

// allowed evaluates the policies attached to c's certificate now (so a
// detached policy or deactivated certificate counts at once) and records
// a denial.
func (h *iotHook) allowed(c mqttConn, clientID, action, resource string) bool {
	h.f.mu.Lock()
	var docs []string
	vars := PolicyVars{CommonName: c.commonName, ClientID: clientID}
	if rec := h.f.iot.certs[c.certID]; rec != nil && rec.status == "ACTIVE" {
		for name := range rec.policies {
			if p := h.f.iot.policies[name]; p != nil {
				docs = append(docs, p.defaultDoc())
			}
		}
		if t := h.f.iot.things[clientID]; t != nil && t.principals[arn("cert/"+c.certID)] {
			vars.ThingName = clientID
		}
	}
	h.f.mu.Unlock()
	if Allowed(docs, action, resource, vars) {
		return true
	}
	h.e.deny(action, resource, clientID)
	return false
}

func (e *mqttEndpoint) conn(clientID string) (mqttConn, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.conns[clientID]
	return c, ok
}

func (e *mqttEndpoint) deny(action, resource, clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.denials = append(e.denials, strings.Join([]string{action, resource, "client=" + clientID}, " "))
}
