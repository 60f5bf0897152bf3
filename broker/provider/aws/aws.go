// Package aws is the provider that runs ggfleet against a real AWS account:
// things, certificates, policies and thing groups in AWS IoT Core, core
// devices and client-device associations in AWS IoT Greengrass V2, and
// artifacts in an S3 bucket. It implements provider.Provider and passes
// providertest.Run against the in-repo HTTP fake (package awsfake).
//
// Credentials, region and endpoints come the standard SDK way (environment,
// shared config, IMDS, web identity); Config.EndpointURL points every client
// at one endpoint for tests. Every AWS operation goes through a client-side
// rate limiter set to AWS's default TPS for that operation, and throttling
// that still happens (another broker sharing the account) is retried with
// backoff, so a big task runs at the quota ceiling without surfacing
// ThrottlingException to users.
package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/greengrassv2"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
)

// Config configures the aws provider.
type Config struct {
	// Region overrides the SDK's region resolution (AWS_REGION, then the
	// shared config's profile); "" leaves it to the SDK.
	Region string
	// EndpointURL, when set, sends every service's requests to this URL
	// (tests, LocalStack-style endpoints) and makes S3 use path-style URLs.
	EndpointURL string
	// ArtifactsBucket is the S3 bucket for artifacts (certs.zip, installer
	// configs); required.
	ArtifactsBucket string
	// ArtifactsPrefix is prepended to artifact keys ("" for none; a trailing
	// "/" is added when missing).
	ArtifactsPrefix string
	// Limits overrides the client-side TPS limit of AWS operations by name
	// (for example "CreateThing": 50 after a quota increase). A value <= 0
	// removes the limit. Operations not named use DefaultLimits.
	Limits map[string]float64
	// MaxAttempts bounds attempts per call, retries of throttling and 5xx
	// errors included; 0 means 10.
	MaxAttempts int
	// Credentials, when set, replaces the SDK's default credential chain.
	Credentials sdkaws.CredentialsProvider
	// Logger receives the provider's logs; nil discards them.
	Logger *slog.Logger
	// HTTPClient, when set, is used for every request.
	HTTPClient *http.Client
}

// DefaultLimits are AWS's default per-account TPS quotas for the operations
// the provider calls (AWS IoT Core and Greengrass V2 service quotas). They
// are the client-side rate limits unless Config.Limits overrides them.
var DefaultLimits = map[string]float64{
	"AddThingToThingGroup":         100,
	"AttachPolicy":                 15,
	"AttachThingPrincipal":         15,
	"CreateCertificateFromCsr":     15,
	"CreateKeysAndCertificate":     10,
	"CreatePolicy":                 10,
	"CreatePolicyVersion":          10,
	"CreateThing":                  15,
	"CreateThingGroup":             25,
	"DeleteCertificate":            10,
	"DeletePolicyVersion":          10,
	"DeleteThing":                  15,
	"DescribeCertificate":          10,
	"DescribeThing":                350,
	"DetachPolicy":                 15,
	"DetachThingPrincipal":         15,
	"GetPolicy":                    15,
	"ListAttachedPolicies":         15,
	"ListPolicyVersions":           10,
	"ListPrincipalThings":          10,
	"ListThingGroupsForThing":      10,
	"ListThingPrincipals":          10,
	"ListThingsInThingGroup":       25,
	"RegisterCertificate":          10,
	"RegisterCertificateWithoutCA": 10,
	"RegisterThing":                10,
	"RemoveThingFromThingGroup":    100,
	"UpdateCertificate":            10,
	"GetRegistrationCode":          10,
	"RegisterCACertificate":        10,
	"DescribeCACertificate":        10,

	"GetCoreDevice":    50,
	"DeleteCoreDevice": 10,
	"BatchAssociateClientDeviceWithCoreDevice":    10,
	"BatchDisassociateClientDeviceFromCoreDevice": 10,
	"ListClientDevicesAssociatedWithCoreDevice":   10,
	"ListInstalledComponents":                     10,
	"ListEffectiveDeployments":                    10,
	"DescribeComponent":                           10,

	"DescribeEndpoint": 10,
	"TagResource":      10,

	"DescribeThingGroup":   100,
	"DescribeJobExecution": 10,
	"CreateDeployment":     1,

	"PutObject":  3500,
	"GetObject":  5500,
	"HeadObject": 5500,

	"PutEvents": 10000,
}

// defaultMaxAttempts is generous because throttling is expected at the
// quota ceiling when several brokers share an account.
const defaultMaxAttempts = 10

// Provider is the AWS provider. It is safe for concurrent use.
type Provider struct {
	iot     *iot.Client
	gg      *greengrassv2.Client
	s3      *s3.Client
	presign *s3.PresignClient
	bus     *eventbridge.Client
	bucket  string
	prefix  string
	region  string
	log     *slog.Logger
	limits  *limiters

	mu       sync.Mutex
	arnBase  string               // "arn:<partition>:iot:<region>:<account>:", learnt from responses
	created  map[string]time.Time // things this process created (AWS does not report creation time)
	nowForTs func() time.Time
}

var _ provider.Provider = (*Provider)(nil)

// New loads the AWS configuration (credentials, region) the standard SDK way
// and returns the provider. It makes no AWS calls.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.ArtifactsBucket == "" {
		return nil, errkind.New(errkind.Invalid, "aws provider: an artifacts bucket is required (--artifacts-bucket)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = defaultMaxAttempts
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() sdkaws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				// The client-side limiters pace requests; the SDK's retry
				// token bucket would only turn throttling into failures.
				o.RateLimiter = ratelimit.None
			})
		}),
		// Plain checksums in headers, no aws-chunked bodies: works with S3
		// and S3-compatible endpoints alike.
		config.WithRequestChecksumCalculation(sdkaws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(sdkaws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	if cfg.EndpointURL != "" {
		opts = append(opts, config.WithBaseEndpoint(cfg.EndpointURL))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws provider: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errkind.New(errkind.Invalid, "aws provider: no AWS region: set --aws-region, AWS_REGION or a region in the shared config")
	}
	limits := newLimiters(DefaultLimits, cfg.Limits)
	awsCfg.APIOptions = append(awsCfg.APIOptions, limits.middleware)

	prefix := strings.Trim(cfg.ArtifactsPrefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	s3Client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.EndpointURL != ""
	})
	return &Provider{
		iot:      iot.NewFromConfig(awsCfg),
		gg:       greengrassv2.NewFromConfig(awsCfg),
		s3:       s3Client,
		presign:  s3.NewPresignClient(s3Client),
		bus:      eventbridge.NewFromConfig(awsCfg),
		bucket:   cfg.ArtifactsBucket,
		prefix:   prefix,
		region:   awsCfg.Region,
		log:      cfg.Logger,
		limits:   limits,
		created:  map[string]time.Time{},
		nowForTs: time.Now,
	}, nil
}

// Mode reports "aws": agents enrolled here connect to AWS IoT Core.
func (p *Provider) Mode() string { return "aws" }

// Region is the AWS region the provider's calls go to: Config.Region, or
// what the SDK's chain found (AWS_REGION, the shared config's profile).
func (p *Provider) Region() string { return p.region }

// Bucket is the S3 bucket artifacts are stored in.
func (p *Provider) Bucket() string { return p.bucket }

// limiters holds one client-side rate limiter per AWS operation.
type limiters struct {
	mu  sync.Mutex
	tps map[string]float64
	by  map[string]*limiter
}

func newLimiters(defaults, overrides map[string]float64) *limiters {
	l := &limiters{tps: map[string]float64{}, by: map[string]*limiter{}}
	for op, v := range defaults {
		l.tps[op] = v
	}
	for op, v := range overrides {
		l.tps[op] = v
	}
	return l
}

// get returns op's limiter, or nil when op is unlimited.
func (l *limiters) get(op string) *limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.by[op]; ok {
		return lim
	}
	var lim *limiter
	if tps := l.tps[op]; tps > 0 {
		lim = &limiter{interval: time.Duration(float64(time.Second) / tps)}
	}
	l.by[op] = lim
	return lim
}

// middleware adds the limiter to a client's stack after the retry step, so
// every attempt (retries included) takes a token before it is signed.
func (l *limiters) middleware(stack *middleware.Stack) error {
	if _, ok := stack.Finalize.Get("Retry"); !ok {
		return nil // a presigning stack: it sends nothing
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("ggfleetRateLimit",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if lim := l.get(awsmiddleware.GetOperationName(ctx)); lim != nil {
				if err := lim.wait(ctx); err != nil {
					return middleware.FinalizeOutput{}, middleware.Metadata{}, err
				}
			}
			return next.HandleFinalize(ctx, in)
		}), "Retry", middleware.After)
}

// limiter spaces calls interval apart (a token bucket of capacity one),
// which keeps a burst of calls from exceeding the server's per-second quota.
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time // earliest start of the next call
}

func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(l.interval)
	l.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Error codes by the kind they map to.
var (
	notFoundCodes = []string{"ResourceNotFoundException", "NoSuchKey", "NotFound"}
	conflictCodes = []string{"ResourceAlreadyExistsException", "ConflictException", "DeleteConflictException",
		"CertificateStateException", "VersionConflictException", "VersionsLimitExceededException"}
	invalidCodes = []string{"InvalidRequestException", "ValidationException", "MalformedPolicyException",
		"CertificateValidationException", "InvalidBucketName", "KeyTooLongError", "InvalidArgument"}
	unavailableCodes = []string{"ThrottlingException", "ServiceUnavailableException", "InternalFailureException",
		"InternalServerException", "InternalError", "SlowDown", "RequestTimeout"}
)

// awsCode is the AWS error code of err, or "".
func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// awsMessage is the AWS error message of err, or "".
func awsMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return ""
}

func hasCode(err error, codes ...string) bool {
	c := awsCode(err)
	for _, x := range codes {
		if c == x {
			return true
		}
	}
	return false
}

// mapErr turns an AWS error into an errkind error that says what failed.
func mapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := fmt.Sprintf("%s: AWS %s: %s", what, ae.ErrorCode(), ae.ErrorMessage())
	switch {
	case hasCode(err, notFoundCodes...):
		return errkind.Wrap(errkind.NotFound, err, "%s", msg)
	case hasCode(err, conflictCodes...):
		return errkind.Wrap(errkind.Conflict, err, "%s", msg)
	case hasCode(err, invalidCodes...):
		return errkind.Wrap(errkind.Invalid, err, "%s", msg)
	case hasCode(err, unavailableCodes...):
		return errkind.Wrap(errkind.Unavailable, err, "%s (still failing after retries; try again later)", msg)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

var certIDRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

func checkCertID(id string) error {
	if !certIDRE.MatchString(id) {
		return errkind.New(errkind.Invalid, "certificate id %q is not valid: it is 64 lowercase hex digits (the SHA-256 of the certificate)", id)
	}
	return nil
}
