package main

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// cryptoRate measures the crypto-only provisioning rate: what the broker's
// provisioning does per core for the certificate (provisioning.Prepare):
// a device key of the default CA's algorithm, its PEM, and a certificate
// signed by ca.Authority.Issue with the default CA (EC-P256, as the local
// provider's broker makes it), on every CPU for d. The CA lives in memory.
func cryptoRate(ctx context.Context, d time.Duration) (float64, error) {
	key := make([]byte, 32)
	auth := ca.New(ca.Config{Store: &memCAs{}, SecretsKey: key})
	if _, _, err := auth.Init(ctx); err != nil {
		return 0, fmt.Errorf("crypto-only rate: make a CA: %w", err)
	}
	alg, err := auth.DefaultKeyAlgorithm(ctx, "")
	if err != nil {
		return 0, err
	}
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	start := time.Now()
	for i := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for n := 0; time.Now().Before(stop) && ctx.Err() == nil; n++ {
				k, err := certs.GenerateKey(alg)
				if err == nil {
					_, err = certs.EncodeKey(k)
				}
				if err == nil {
					_, _, err = auth.Issue(ctx, "", k.Public(), pkix.Name{CommonName: fmt.Sprintf("crypto-%d-%d", i, n)}, 0)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("crypto-only rate: %w", firstErr)
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// memCAs is a ca.Store in memory, for the crypto-only rate.
type memCAs struct {
	mu  sync.Mutex
	cas []ca.Record
}

func (m *memCAs) InsertCA(_ context.Context, rec ca.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cas = append(m.cas, rec)
	return nil
}

func (m *memCAs) CreateDefaultCA(_ context.Context, rec ca.Record) (ca.Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.cas {
		if r.Default {
			return r, false, nil
		}
	}
	m.cas = append(m.cas, rec)
	return rec, true, nil
}

func (m *memCAs) GetCA(_ context.Context, id string) (ca.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.cas {
		if r.ID == id {
			return r, nil
		}
	}
	return ca.Record{}, errkind.New(errkind.NotFound, "CA %s not found", id)
}

func (m *memCAs) DefaultCA(_ context.Context) (ca.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.cas {
		if r.Default {
			return r, nil
		}
	}
	return ca.Record{}, errkind.New(errkind.NotFound, "no default CA")
}

func (m *memCAs) ListCAs(_ context.Context) ([]ca.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]ca.Record(nil), m.cas...), nil
}

// coreName is the name of the i-th benchmark core.
func coreName(i int) string { return fmt.Sprintf("fb-core-%05d", i) }

// submitCores starts the Create tasks of n cores, taskSize cores each,
// round-robin over the replicas, and returns their ids.
func submitCores(ctx context.Context, clients []*apiClient, n, taskSize int) ([]string, error) {
	var ids []string
	for first := 0; first < n; first += taskSize {
		cores := make([]cdf.NewCore, 0, taskSize)
		for i := first; i < min(first+taskSize, n); i++ {
			name := coreName(i)
			cores = append(cores, cdf.NewCore{Name: name, ProvisioningTemplate: "ggfleet-core",
				ProvisioningParameters: map[string]string{"ThingName": name}, ConfigFileGenerator: "MANUAL_INSTALL"})
		}
		id, err := clients[len(ids)%len(clients)].submitCores(ctx, cores)
		if err != nil {
			return ids, fmt.Errorf("submit cores %d to %d: %w", first, first+len(cores)-1, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// waitCores waits until every item of the core tasks ids is final and
// returns how many did not end Success and when the last task ended by
// the brokers' clock (its updatedAt; fleetbench runs them on its own
// host, so it is the bench's clock too). It lists the tasks every 100 ms
// (GET /coreTasks carries no items) and reads each one in full when it
// has ended, to check and count its items (a task is Failure from its
// first failed batch on: it is read again until every item is final):
// P1's end is that of its work, not of a poll.
func waitCores(ctx context.Context, c *apiClient, ids []string, progress io.Writer) (failed int, end time.Time, err error) {
	start, last, total := time.Now(), time.Now(), len(ids)
	left := make(map[string]bool, len(ids))
	for _, id := range ids {
		left[id] = true
	}
	for len(left) > 0 {
		select {
		case <-ctx.Done():
			return failed, end, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		ended, err := c.endedCoreTasks(ctx)
		if err != nil {
			return failed, end, err
		}
		for id, at := range ended {
			if !left[id] {
				continue
			}
			done, f, err := c.coreTaskDone(ctx, id)
			if err != nil {
				return failed, end, err
			}
			if !done { // a Failure task's other batches are still running
				continue
			}
			failed += f
			delete(left, id)
			if at.After(end) {
				end = at
			}
		}
		if time.Since(last) >= 15*time.Second {
			progressf(progress, "  P1: %d of %d tasks still running after %s", len(left), total, time.Since(start).Round(time.Second))
			last = time.Now()
		}
	}
	return failed, end, nil
}

// probe is P3's sampler: two goroutines, one reading GET /cores/{random
// benchmark core} and one GET /fleet/summary, each one request every
// interval (or right after the previous answer when that took longer),
// round-robin over the replicas.
type probe struct {
	clients  []*apiClient
	cores    int
	interval time.Duration
}

// sample is one probe request: when it was sent, how long its answer
// took, and whether it was a complete 200.
type sample struct {
	At time.Time
	D  time.Duration
	OK bool
}

// summariseBefore summarises the samples sent before end.
func summariseBefore(samples []sample, end time.Time) latencies {
	var ds []time.Duration
	errs := 0
	for _, s := range samples {
		switch {
		case !s.At.Before(end):
		case s.OK:
			ds = append(ds, s.D)
		default:
			errs++
		}
	}
	return summarise(ds, errs)
}

// run samples until ctx ends and returns both endpoints' samples.
func (p probe) run(ctx context.Context) (core, summary []sample) {
	var wg sync.WaitGroup
	wg.Go(func() {
		core = p.loop(ctx, func() string { return "/cores/" + coreName(rand.IntN(p.cores)) })
	})
	wg.Go(func() {
		summary = p.loop(ctx, func() string { return "/fleet/summary" })
	})
	wg.Wait()
	return core, summary
}

func (p probe) loop(ctx context.Context, path func() string) []sample {
	var samples []sample
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return samples
		case <-tick.C:
		}
		at := time.Now()
		d, ok := p.clients[i%len(p.clients)].timedGet(ctx, path())
		if ctx.Err() != nil {
			return samples // cut off by the end of the phase: not a sample
		}
		samples = append(samples, sample{At: at, D: d, OK: ok})
	}
}
