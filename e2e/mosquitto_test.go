package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
)

// The real ggagent against `ggfleet serve --mqtt-url` and a Mosquitto run
// with docs/mosquitto.md's configuration: reports and deployments pass
// through Mosquitto, and after a core is deleted the CRL file ggfleet keeps
// current makes Mosquitto refuse its certificate (once reloaded, as the
// doc's reload unit does).
func TestMosquittoExternalBroker(t *testing.T) {
	mosquittotest.Binary(t)
	dir := mosquittotest.Dir(t)
	srvCA := mosquittotest.ServerTLS(t, dir)
	srvCAFile := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(srvCAFile, srvCA, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := mosquittotest.FreeAddr(t)
	crlFile, caFile := filepath.Join(dir, "crl.pem"), filepath.Join(dir, "ca.pem")
	b := startBroker(t, "--mqtt-url", "mqtts://"+addr, "--mqtt-server-ca-file", srvCAFile, "--mqtt-advertise", addr,
		"--mqtt-crl-file", crlFile, "--mqtt-ca-file", caFile, "--mqtt-client-id", "ggfleet.broker.e2e")
	logBrokerOnFailure(t, b)
	waitFor(t, time.Minute, "ggfleet to write ca.pem and crl.pem", func() bool {
		_, e1 := os.Stat(crlFile)
		_, e2 := os.Stat(caFile)
		return e1 == nil && e2 == nil
	})
	srv := mosquittotest.Start(t, dir, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", tail(srv.Log(), 6000))
		}
	})

	b.readyCore("mq-a")
	b.readyCore("mq-b")
	dirA, dirB := b.enrollAgent("mq-a"), b.enrollAgent("mq-b")
	if ident, err := os.ReadFile(filepath.Join(dirA, identityFile)); err != nil || !strings.Contains(string(ident), addr) {
		t.Fatalf("enrollment did not hand out --mqtt-advertise %s: %s %v", addr, ident, err)
	}

	// Health reaches the broker's store through Mosquitto; a deployment
	// reaches the agent and its outcome comes back.
	start := time.Now()
	agentA := startAgent(t, dirA)
	b.waitOnline("mq-a", start.Add(-time.Second))
	b.must(201, "POST", "/templates", map[string]any{"name": "MqT",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if task := b.waitTask("/deploymentTasks/"+b.deploy("MqT", "mq-a"), 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment over Mosquitto = %v", task)
	}

	// Delete core A: its certificate lands in the CRL; after a reload
	// Mosquitto refuses it, while B's still connects.
	agentA.kill()
	certA := loadCert(t, dirA)
	r := b.must(202, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Delete",
		"options": map[string]any{"deprovisionCores": true, "deprovisionClientDevices": false},
		"cores":   []map[string]any{{"name": "mq-a", "provisioningTemplate": "UNUSED"}}})
	if task := b.waitTask("/coreTasks/"+r.Header.Get("x-taskid"), 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("delete core task = %v", task)
	}
	serial := certA.Leaf.SerialNumber
	waitFor(t, time.Minute, "A's certificate in the CRL file", func() bool {
		data, _ := os.ReadFile(crlFile)
		for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
			crl, err := x509.ParseRevocationList(block.Bytes)
			if err != nil {
				continue
			}
			for _, e := range crl.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(serial) == 0 {
					return true
				}
			}
		}
		return false
	})
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srvCA)
	waitFor(t, time.Minute, "Mosquitto refusing A's certificate", func() bool {
		return mqttConnect(addr, "mq-a", certA, roots) != nil
	})
	if err := mqttConnect(addr, "mq-b", loadCert(t, dirB), roots); err != nil {
		t.Fatalf("core B's certificate was refused too: %v", err)
	}
}

// loadCert reads an enrolled state directory's certificate and key.
func loadCert(t *testing.T, stateDir string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "device.crt"), filepath.Join(stateDir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// mqttConnect opens and closes an MQTT session with cert; nil means
// Mosquitto accepted it.
func mqttConnect(addr, clientID string, cert tls.Certificate, roots *x509.CertPool) error {
	opts := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID(clientID).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		return errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(100)
	return nil
}

// Two replicas on one PostgreSQL share one Mosquitto: the agent enrolled
// through one of them reports to both (whichever takes the message), and a
// deployment submitted to the other reaches it and ends Success.
func TestMosquittoTwoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("long: two replicas, PostgreSQL and Mosquitto")
	}
	mosquittotest.Binary(t)
	dbURL, _ := testPostgresDB(t)
	dir := mosquittotest.Dir(t)
	srvCA := mosquittotest.ServerTLS(t, dir)
	srvCAFile := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(srvCAFile, srvCA, 0o644); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := mosquittotest.FreeAddr(t)
	common := []string{"--database", dbURL, "--secrets-key-file", keyFile, "--mqtt-url", "mqtts://" + addr, "--mqtt-server-ca-file", srvCAFile}
	r1 := startBroker(t, append(common, "--mqtt-client-id", "ggfleet.broker.r1",
		"--mqtt-crl-file", filepath.Join(dir, "crl.pem"), "--mqtt-ca-file", filepath.Join(dir, "ca.pem"))...)
	r2 := startReplica(t, r1, append(common, "--mqtt-client-id", "ggfleet.broker.r2")...)
	keepReplicaLogs(t, r1, r2)
	waitFor(t, time.Minute, "ca.pem and crl.pem", func() bool {
		_, e1 := os.Stat(filepath.Join(dir, "crl.pem"))
		_, e2 := os.Stat(filepath.Join(dir, "ca.pem"))
		return e1 == nil && e2 == nil
	})
	srv := mosquittotest.Start(t, dir, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", tail(srv.Log(), 6000))
		}
	})

	r1.readyCore("mq-r")
	state := r1.enrollAgent("mq-r")
	start := time.Now()
	startAgent(t, state)
	r1.waitOnline("mq-r", start.Add(-time.Second))
	r2.waitOnline("mq-r", start.Add(-time.Second))
	r2.must(201, "POST", "/templates", map[string]any{"name": "MqR",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if task := r2.waitTask("/deploymentTasks/"+r2.deploy("MqR", "mq-r"), 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment through replica 2 = %v", task)
	}
}
