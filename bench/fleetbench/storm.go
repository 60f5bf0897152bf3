package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/bench/benchpki"
	"github.com/ggfleet/ggfleet/bench/loadgen"
)

// P7: a reconnect storm. Every enrolled simulated agent opens a new mTLS
// MQTT session to ggfleet at once (concurrency at a time, each kept until
// all have tried): connects per second, against the in-process TLS
// handshake rate of the same number of agents (benchpki.HandshakeStorm),
// and against AWS IoT Core's default of 500 connects/s.

// awsConnectRate is AWS IoT Core's default connect quota per account.
const awsConnectRate = 500

// stormResult is P7's figures.
type stormResult struct {
	Agents   int
	Failed   int
	Wall     time.Duration
	Rate     float64 // connects/s through ggfleet
	TLSRate  float64 // bare in-process handshakes/s, same count and concurrency
	TLSWall  time.Duration
	TLSFails int
}

// stormGgfleet connects every identity at once and times it, then
// measures the reference.
func stormGgfleet(ctx context.Context, ids []*loadgen.Identity, concurrency int) (stormResult, error) {
	res := stormResult{Agents: len(ids)}
	clients := make([]paho.Client, len(ids))
	var failed atomic.Int64
	sem := make(chan struct{}, max(concurrency, 1))
	var wg sync.WaitGroup
	start := time.Now()
	for i, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return res, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := loadgen.Connect(id)
			if err != nil {
				failed.Add(1)
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	res.Wall = time.Since(start)
	for _, c := range clients {
		if c != nil {
			c.Disconnect(0)
		}
	}
	res.Failed = int(failed.Load())
	res.Rate = float64(len(ids)-res.Failed) / res.Wall.Seconds()

	things := make([]string, len(ids))
	for i := range things {
		things[i] = coreName(i)
	}
	p, err := benchpki.New("fleetbench P7 CA", things)
	if err != nil {
		return res, err
	}
	res.TLSRate, res.TLSFails, res.TLSWall, err = p.HandshakeStorm(concurrency)
	return res, err
}
