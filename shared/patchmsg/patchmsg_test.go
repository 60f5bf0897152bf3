package patchmsg_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestConnectionPort(t *testing.T) {
	tests := []struct {
		name, in   string
		port       int
		serialPort string
	}{
		{"ssh", `{"type":"ssh","host":"h","port":2222}`, 2222, ""},
		{"serial", `{"type":"serial","port":"/dev/ttyS0","baudRate":115200}`, 0, "/dev/ttyS0"},
		{"none", `{"type":"ssh","host":"h"}`, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c patchmsg.Connection
			if err := json.Unmarshal([]byte(tt.in), &c); err != nil {
				t.Fatal(err)
			}
			if c.Port != tt.port || c.SerialPort != tt.serialPort {
				t.Fatalf("port %d serial %q", c.Port, c.SerialPort)
			}
			out, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			var back patchmsg.Connection
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			if back.Port != tt.port || back.SerialPort != tt.serialPort {
				t.Fatalf("round trip %s: port %d serial %q", out, back.Port, back.SerialPort)
			}
		})
	}
}

func TestTargetValidate(t *testing.T) {
	ok := patchmsg.Target{DeviceID: "plc-07", CoreName: "core1", Connection: patchmsg.Connection{
		Type: "ssh", Host: "10.0.0.7", Port: 22, Username: "root",
		Auth:    &patchmsg.Auth{Method: patchmsg.AuthPrivateKey, CredentialRef: "core:plc-07-key"},
		HostKey: "ssh-ed25519 AAAA", HostKeyPolicy: "strict",
	}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid profile refused: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*patchmsg.Target)
		want string
	}{
		{"no type", func(t *patchmsg.Target) { t.Connection.Type = "" }, "connection.type"},
		{"secret inline", func(t *patchmsg.Target) { t.Connection.Auth.CredentialRef = "hunter2" }, "core:NAME"},
		{"path in ref", func(t *patchmsg.Target) { t.Connection.Auth.CredentialRef = "core:../x" }, "credential name"},
		{"strict without key", func(t *patchmsg.Target) { t.Connection.HostKey = "" }, "hostKey is required"},
		{"no core", func(t *patchmsg.Target) { t.CoreName = "" }, "coreName"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := ok
			a := *ok.Connection.Auth
			tg.Connection.Auth = &a
			tt.mod(&tg)
			err := tg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	if _, err := patchmsg.Decode[patchmsg.Event]([]byte(`{"version":1,"patchId":"p","attempt":1,"seq":3,"type":"completed","status":"maybe"}`)); err == nil {
		t.Fatal("completed with a bad status accepted")
	}
	e, err := patchmsg.Decode[patchmsg.Event]([]byte(`{"version":1,"patchId":"p","attempt":2,"seq":3,"type":"completed","status":"success","statusMessage":"AGENT:Success","newField":1}`))
	if err != nil || e.Attempt != 2 || e.StatusMessage != "AGENT:Success" {
		t.Fatalf("%+v %v", e, err)
	}
	if _, err := patchmsg.Decode[patchmsg.Job]([]byte(strings.Repeat(" ", patchmsg.MaxPayload+1))); err == nil {
		t.Fatal("oversized job accepted")
	}
}

func TestParseSuffix(t *testing.T) {
	tests := []struct{ in, kind, id, verb string }{
		{"patches/abc/start", "patches", "abc", "start"},
		{"targets/plc-07/probe/result", "targets", "plc-07", "probe/result"},
		{"health", "", "", ""},
		{"patches/abc", "", "", ""},
	}
	for _, tt := range tests {
		kind, id, verb, ok := patchmsg.ParseSuffix(tt.in)
		if kind != tt.kind || id != tt.id || verb != tt.verb || ok != (tt.kind != "") {
			t.Errorf("%q → %q %q %q %v", tt.in, kind, id, verb, ok)
		}
	}
}
