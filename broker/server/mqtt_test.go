package server

import (
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{DataDir: "d", Listen: "127.0.0.1:8080", MQTTListen: "127.0.0.1:8883", Provider: "local",
		MaxBodyBytes: 1 << 20, DeploymentTimeout: time.Minute, Workers: 4}
}

// The external-broker flags are checked together, and enrollment
// advertises the right endpoint in both modes.
func TestMQTTFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      func(*Config)
		wantErr  string
		endpoint string
	}{
		{"embedded", func(*Config) {}, "", "127.0.0.1:8883"},
		{"embedded advertised", func(c *Config) { c.MQTTAdvertise = "mqtt.example:8883" }, "", "mqtt.example:8883"},
		{"external", func(c *Config) { c.MQTTURL, c.MQTTServerCAFile = "mqtts://mq.example:8884", "ca.pem" }, "", "mq.example:8884"},
		{"external advertised", func(c *Config) {
			c.MQTTURL, c.MQTTServerCAFile, c.MQTTAdvertise = "mqtts://10.0.0.5:8883", "ca.pem", "mqtt.example:443"
		}, "", "mqtt.example:443"},
		{"plain url", func(c *Config) { c.MQTTURL, c.MQTTServerCAFile = "mqtt://mq:1883", "ca.pem" }, "want mqtts://host:port", ""},
		{"no port", func(c *Config) { c.MQTTURL, c.MQTTServerCAFile = "mqtts://mq", "ca.pem" }, "want mqtts://host:port", ""},
		{"no server CA", func(c *Config) { c.MQTTURL = "mqtts://mq:8883" }, "needs --mqtt-server-ca-file", ""},
		{"client id without url", func(c *Config) { c.MQTTClientID = "x" }, "only apply with --mqtt-url", ""},
		{"wildcard client id", func(c *Config) { c.MQTTURL, c.MQTTServerCAFile, c.MQTTClientID = "mqtts://mq:8883", "ca.pem", "a/#" }, "must not contain", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.set(&c)
			err := c.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if got := c.mqttEndpoint(); got != tc.endpoint {
				t.Errorf("mqttEndpoint() = %q, want %q", got, tc.endpoint)
			}
		})
	}
}
