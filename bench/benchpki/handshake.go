package benchpki

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// HandshakeStorm is a reconnect storm's reference: each of the PKI's
// agents does one mutual-TLS handshake against a bare Go tls.Listener in
// this process (the server certificate, client certificates required and
// verified), concurrency at a time, and keeps its connection until all
// have tried. It returns handshakes per second, how many failed, and the
// wall time — the in-process TLS handshake rate of this machine.
func (p *PKI) HandshakeStorm(concurrency int) (rate float64, failed int, wall time.Duration, err error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.Pool})
	if err != nil {
		return 0, 0, 0, err
	}
	var served sync.WaitGroup
	defer served.Wait()
	defer ln.Close()
	served.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served.Go(func() {
				defer c.Close()
				if tc, ok := c.(*tls.Conn); ok && tc.Handshake() == nil {
					_, _ = io.Copy(io.Discard, c)
				}
			})
		}
	})
	agents := len(p.Agents)
	var nFailed atomic.Int64
	sem := make(chan struct{}, max(concurrency, 1))
	conns := make([]net.Conn, agents)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{p.Agents[i]}, RootCAs: p.Pool, ServerName: "127.0.0.1"})
			if err != nil {
				nFailed.Add(1)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	wall = time.Since(start)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	ok := agents - int(nFailed.Load())
	return float64(ok) / wall.Seconds(), int(nFailed.Load()), wall, nil
}
