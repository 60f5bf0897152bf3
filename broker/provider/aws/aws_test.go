package aws_test

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/provider/providertest"
)

const testBucket = "ggfleet-artifacts"

// newProvider starts a fake with the bucket testBucket and an aws provider
// talking to it that keeps artifacts there under the prefix fleet1.
func newProvider(t *testing.T, mod func(*awsprov.Config)) (*awsprov.Provider, *awsfake.Fake) {
	t.Helper()
	p, fake := awstest.NewProvider(t, func(cfg *awsprov.Config) {
		cfg.ArtifactsBucket, cfg.ArtifactsPrefix = testBucket, "fleet1"
		if mod != nil {
			mod(cfg)
		}
	})
	fake.CreateBucket(testBucket)
	return p, fake
}

// registering wraps the provider so the suite can register cores: in AWS
// that happens when the nucleus connects, here through the fake.
type registering struct {
	*awsprov.Provider
	fake *awsfake.Fake
}

func (r registering) MarkCoreRegistered(_ context.Context, name string) error {
	return r.fake.RegisterCoreDevice(name, awsfake.CoreHealthy)
}

// TrustCA registers a test CA with AWS IoT, as the broker does with its own.
func (r registering) TrustCA(ctx context.Context, is *providertest.Issuer) error {
	return r.Provider.RegisterCA(ctx, testIssuer{is}, is.CAID(), is.CAPEM)
}

// testIssuer is a providertest CA as the provider's CertificateIssuer.
type testIssuer struct{ is *providertest.Issuer }

func (ti testIssuer) Issue(_ context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (string, string, error) {
	if caID != ti.is.CAID() {
		return "", "", fmt.Errorf("test issuer asked for CA %s, holds %s", caID, ti.is.CAID())
	}
	certPEM, err := ti.is.Sign(pub, subject, days)
	return certPEM, ti.is.CAPEM, err
}

func TestProviderSuite(t *testing.T) {
	providertest.Run(t, func(t *testing.T) provider.Provider {
		p, fake := newProvider(t, nil)
		return registering{Provider: p, fake: fake}
	})
}

// TestDefaultLimitsMatchFake keeps the client-side limits and the fake's
// quotas (both AWS's defaults) in step.
func TestDefaultLimitsMatchFake(t *testing.T) {
	for op, q := range awsfake.DefaultQuotas {
		if got, ok := awsprov.DefaultLimits[op]; !ok || got != q {
			t.Errorf("DefaultLimits[%s] = %v (present %v), fake quota %v", op, got, ok, q)
		}
	}
}

// TestThrottling runs many concurrent CreateThing calls against a low fake
// quota without client-side limits: every call must succeed, the fake must
// have throttled some, and no ThrottlingException may reach the caller.
func TestThrottling(t *testing.T) {
	p, fake := newProvider(t, func(c *awsprov.Config) {
		c.Limits = map[string]float64{"CreateThing": 0, "DescribeThing": 0}
		c.MaxAttempts = 30
	})
	fake.SetQuota("CreateThing", 20)
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.CreateThing(context.Background(), fmt.Sprintf("thing-%d", i), "", nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("CreateThing: %v", err)
		}
	}
	if c := fake.Calls("CreateThing"); c <= n {
		t.Errorf("fake saw %d CreateThing calls, want more than %d (some throttled and retried)", c, n)
	}
}

// TestClientSideLimit checks that the default limiter keeps a burst under
// the fake's quota, so the fake never throttles.
func TestClientSideLimit(t *testing.T) {
	p, fake := newProvider(t, func(c *awsprov.Config) {
		c.Limits = map[string]float64{"CreateThingGroup": 50}
	})
	fake.SetQuota("CreateThingGroup", 50)
	const n = 40
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.CreateThingGroup(context.Background(), fmt.Sprintf("g-%d", i), ""); err != nil {
				t.Errorf("CreateThingGroup: %v", err)
			}
		}()
	}
	wg.Wait()
	if c := fake.Calls("CreateThingGroup"); c != n {
		t.Errorf("fake saw %d CreateThingGroup calls, want exactly %d (none throttled)", c, n)
	}
	if d := time.Since(start); d < 700*time.Millisecond {
		t.Errorf("%d calls at 50 TPS took %v, want about 0.8 s", n, d)
	}
}

func TestErrorMapping(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		code string
		want errkind.Kind
	}{
		{"ResourceNotFoundException", errkind.NotFound},
		{"InvalidRequestException", errkind.Invalid},
		{"UnauthorizedException", errkind.Other},
		{"ServiceUnavailableException", errkind.Unavailable},
	} {
		t.Run(tc.code, func(t *testing.T) {
			p, fake := newProvider(t, func(c *awsprov.Config) { c.MaxAttempts = 1 })
			fake.FailNext("GetPolicy", tc.code)
			_, err := p.GetPolicy(ctx, "pol")
			if got := errkind.KindOf(err); got != tc.want || err == nil {
				t.Fatalf("GetPolicy with injected %s: error %v has kind %v, want %v", tc.code, err, got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.code) {
				t.Errorf("error %q does not name the AWS code %s", err, tc.code)
			}
		})
	}
	t.Run("ResourceAlreadyExistsException", func(t *testing.T) {
		p, fake := newProvider(t, nil)
		fake.FailNext("CreateThing", "ResourceAlreadyExistsException")
		err := p.CreateThing(ctx, "t1", "", nil)
		if !errkind.Is(err, errkind.Conflict) {
			t.Fatalf("CreateThing with injected conflict: %v, want errkind.Conflict", err)
		}
	})
	t.Run("retried server errors", func(t *testing.T) {
		p, fake := newProvider(t, nil)
		fake.FailNext("CreateThingGroup", "ThrottlingException")
		fake.FailNext("CreateThingGroup", "InternalFailureException")
		if err := p.CreateThingGroup(ctx, "g1", ""); err != nil {
			t.Fatalf("CreateThingGroup after a throttle and a 500: %v", err)
		}
		if c := fake.Calls("CreateThingGroup"); c != 3 {
			t.Errorf("CreateThingGroup calls = %d, want 3", c)
		}
	})
}

// TestFakeValidation checks that the fake rejects what AWS rejects, with the
// status and code the SDK decodes into the typed error.
func TestFakeValidation(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	client := rawIoT(fake)
	for _, tc := range []struct {
		name, thing, code string
		status            int
	}{
		{"space", "has space", "InvalidRequestException", 400},
		{"too long", strings.Repeat("a", 129), "InvalidRequestException", 400},
		{"non-ASCII", "naïve", "InvalidRequestException", 400},
		{"colon is fine for AWS", "has:colon", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rawCreateThing(ctx, client, tc.thing)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("CreateThing(%q): %v, want success", tc.thing, err)
				}
				return
			}
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != tc.code {
				t.Fatalf("CreateThing(%q) = %v, want %s", tc.thing, err, tc.code)
			}
			if s := httpStatus(err); s != tc.status {
				t.Errorf("status = %d, want %d", s, tc.status)
			}
			if !isInvalidRequest(err) {
				t.Errorf("error %T is not *types.InvalidRequestException", err)
			}
		})
	}
	t.Run("certificate status enum", func(t *testing.T) {
		err := rawRegisterWithStatus(ctx, t, client, "SLEEPY")
		if !isInvalidRequest(err) {
			t.Fatalf("RegisterCertificateWithoutCA(status SLEEPY) = %v, want InvalidRequestException", err)
		}
	})
	t.Run("principal ARN", func(t *testing.T) {
		if err := p.CreateThing(ctx, "t1", "", nil); err != nil {
			t.Fatal(err)
		}
		err := rawAttach(ctx, client, "t1", "arn:aws:iot:us-east-1:123:cert/abc")
		if !isInvalidRequest(err) {
			t.Fatalf("AttachThingPrincipal(bad ARN) = %v, want InvalidRequestException", err)
		}
	})
	t.Run("unsigned request", func(t *testing.T) {
		if s := unsignedStatus(t, fake.URL()+"/things/x"); s != 403 {
			t.Fatalf("unsigned request status = %d, want 403", s)
		}
	})
}

func TestArtifactsInS3(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	bucket, err := p.PutArtifact(ctx, "greengrass2/artifacts/core-1/core-1/certs.zip", "application/zip", []byte("zip"))
	if err != nil {
		t.Fatalf("PutArtifact: %v", err)
	}
	if bucket != testBucket || p.Bucket() != testBucket {
		t.Errorf("bucket = %q, Bucket() = %q, want %q", bucket, p.Bucket(), testBucket)
	}
	data, ct, ok := fake.Object(testBucket, "fleet1/greengrass2/artifacts/core-1/core-1/certs.zip")
	if !ok || string(data) != "zip" || ct != "application/zip" {
		t.Fatalf("object under the prefix = %q %q %v, want zip application/zip", data, ct, ok)
	}
	if fake.Calls("PutObject") != 1 {
		t.Errorf("PutObject calls = %d, want 1", fake.Calls("PutObject"))
	}

	p2, _ := newProvider(t, func(c *awsprov.Config) { c.ArtifactsBucket = "no-such-bucket" })
	_, err = p2.PutArtifact(ctx, "a.json", "application/json", []byte("{}"))
	if err == nil || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Fatalf("PutArtifact to a missing bucket: %v, want an error naming NoSuchBucket", err)
	}
}

func TestDeleteThingKeepsPolicyVersionsBounded(t *testing.T) {
	p, fake := newProvider(t, nil)
	ctx := context.Background()
	for i := range 8 {
		doc := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"r%d"}]}`, i)
		if _, err := p.PutPolicy(ctx, "pol", doc); err != nil {
			t.Fatalf("PutPolicy %d: %v", i, err)
		}
		got, err := p.GetPolicy(ctx, "pol")
		if err != nil || got.Document != doc {
			t.Fatalf("GetPolicy after version %d = %q, %v", i, got.Document, err)
		}
	}
	if c := fake.Calls("DeletePolicyVersion"); c != 3 {
		t.Errorf("DeletePolicyVersion calls = %d, want 3 (versions 6, 7, 8 each made room)", c)
	}
	// An unchanged document makes no version.
	before := fake.Calls("CreatePolicyVersion")
	got, _ := p.GetPolicy(ctx, "pol")
	if _, err := p.PutPolicy(ctx, "pol", got.Document); err != nil {
		t.Fatal(err)
	}
	if fake.Calls("CreatePolicyVersion") != before {
		t.Errorf("PutPolicy with the same document created a version")
	}
}

func TestNewNeedsBucketAndRegion(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/config")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if _, err := awsprov.New(context.Background(), awsprov.Config{Region: "us-east-1"}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("New without bucket: %v, want errkind.Invalid", err)
	}
	if _, err := awsprov.New(context.Background(), awsprov.Config{ArtifactsBucket: "b"}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("New without region: %v, want errkind.Invalid", err)
	}
}
