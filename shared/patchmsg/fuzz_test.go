package patchmsg_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// roundTrip checks that a decoded message encodes to JSON that decodes
// again to the same encoding: what one side accepts, the other can read.
func roundTrip[T patchmsg.Job | patchmsg.Cancel | patchmsg.Event | patchmsg.LogChunk | patchmsg.ProbeRequest | patchmsg.ProbeResult](t *testing.T, payload []byte) {
	t.Helper()
	m, err := patchmsg.Decode[T](payload)
	if err != nil {
		return
	}
	first, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("%T decoded from %q does not encode: %v", m, payload, err)
	}
	again, err := patchmsg.Decode[T](first)
	if err != nil {
		t.Fatalf("%T re-encoded as %s does not decode: %v", m, first, err)
	}
	second, err := json.Marshal(again)
	if err != nil || !bytes.Equal(first, second) {
		t.Fatalf("%T round trip changed: %s then %s (%v)", m, first, second, err)
	}
}

// FuzzDecode feeds arbitrary payloads to every patch message decoder (the
// agent decodes jobs, cancels and probe requests; the broker events, log
// chunks and probe results) and to the topic-suffix parser: no panic, and
// whatever decodes survives a round trip.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"patchId":"p","attempt":1,"seq":3,"type":"completed","status":"success","statusMessage":"AGENT:Success"}`,
		`{"version":1,"patchId":"p","attempt":1,"step":"s","stream":"stdout","seq":1,"data":"aGk=","eof":true}`,
		`{"version":1,"probeId":"x","deviceId":"d","target":{"transport":"ssh","connection":{"host":"h","port":22,"user":"u"}}}`,
		`{"version":1,"probeId":"x","deviceId":"d","ok":true,"uname":"Linux"}`,
		`{"version":1,"patchId":"p","attempt":2}`,
		`{"version":1,"patchId":"p","attempt":1,"deviceId":"d","steps":[{"name":"a","run":"echo hi"}],"target":{"transport":"serial","connection":{"path":"/dev/ttyUSB0","baud":115200}}}`,
		`{"version":0}`, `null`, `[]`, `{"version":1e99}`, `{"target":{"connection":{"port":"22"}}}`,
	} {
		f.Add("patches/p/events", []byte(s))
	}
	f.Add("targets/d/probe/result", []byte(`{}`))
	f.Fuzz(func(t *testing.T, suffix string, payload []byte) {
		roundTrip[patchmsg.Job](t, payload)
		roundTrip[patchmsg.Cancel](t, payload)
		roundTrip[patchmsg.Event](t, payload)
		roundTrip[patchmsg.LogChunk](t, payload)
		roundTrip[patchmsg.ProbeRequest](t, payload)
		roundTrip[patchmsg.ProbeResult](t, payload)
		if kind, id, verb, ok := patchmsg.ParseSuffix(suffix); ok && (kind == "" || id == "" || verb == "") {
			t.Fatalf("ParseSuffix(%q) = %q %q %q, ok with an empty part", suffix, kind, id, verb)
		}
		_, _ = patchmsg.CredentialName(suffix)
	})
}
