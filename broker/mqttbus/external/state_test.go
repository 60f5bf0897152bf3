package external

import (
	"crypto/tls"
	"testing"
)

// paho runs OnConnect and OnConnectionLost on goroutines of their own, so
// a connection's handlers can run after the next attempt has started. The
// subscribed state must follow the newest attempt only.
func TestSubscribedFollowsNewestAttempt(t *testing.T) {
	b, err := New(Config{URL: "mqtts://127.0.0.1:1", ClientID: "r1", Certificate: tls.Certificate{Certificate: [][]byte{{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	first := b.currentEpoch()
	if !b.markSubscribed(first) {
		t.Fatal("the first connection could not be marked subscribed")
	}
	b.newAttempt() // the connection was lost; paho reconnects
	if b.subscribed {
		t.Fatal("still subscribed after the connection was lost")
	}
	if b.markSubscribed(first) {
		t.Fatal("a late onConnect of the lost connection marked the new one subscribed")
	}
	if b.subscribed {
		t.Fatal("subscribed before the new connection subscribed")
	}
	if !b.markSubscribed(b.currentEpoch()) {
		t.Fatal("the new connection could not be marked subscribed")
	}
	if b.Connected() {
		t.Fatal("Connected without an open connection")
	}
}
