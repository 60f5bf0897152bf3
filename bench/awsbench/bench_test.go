package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunSmall runs the benchmark on a small task: every core succeeds, the
// bottleneck is a 10 TPS operation called once per core (RegisterThing, or
// the RegisterCertificate it makes: the two tie), and the report names it.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and the AWS fake")
	}
	res, err := Run(context.Background(), options{Cores: 25, Workers: 8, Latency: time.Millisecond, Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 0 {
		t.Fatalf("%d of %d cores failed", res.Failed, res.Cores)
	}
	if op := res.Bottleneck.Op; (op != "RegisterThing" && op != "RegisterCertificate") || res.CeilingPerSec <= 0 || res.Ratio <= 0 {
		t.Fatalf("bottleneck %+v, ceiling %.2f, ratio %.3f", res.Bottleneck, res.CeilingPerSec, res.Ratio)
	}
	if md := res.Markdown(); !strings.Contains(md, "| "+res.Bottleneck.Op+" | ") || !strings.Contains(md, "achieved / ceiling") {
		t.Fatalf("markdown:\n%s", md)
	}
}
