package aws

import (
	"context"
	"fmt"
	"sort"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
)

// CertificateActive reports whether a certificate is registered and ACTIVE
// (the embedded MQTT bus asks it on every connect).
func (p *Provider) CertificateActive(ctx context.Context, certID string) (bool, error) {
	c, err := p.DescribeCertificate(ctx, certID)
	if errkind.Is(err, errkind.NotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return c.Status == provider.CertificateActive, nil
}

// ListThingGroupsForThing lists the groups a thing is a direct member of,
// sorted (the deployment service moves cores between groups with it).
func (p *Provider) ListThingGroupsForThing(ctx context.Context, thing string) ([]string, error) {
	if err := provider.CheckName("thing name", thing); err != nil {
		return nil, err
	}
	groups, err := p.thingGroups(ctx, thing)
	if err != nil {
		return nil, err
	}
	sort.Strings(groups)
	return groups, nil
}

// Endpoints are the account's AWS IoT endpoints, as devices use them.
type Endpoints struct {
	Data       string // iot:Data-ATS host: MQTT and the Greengrass data plane
	Credential string // iot:CredentialProvider host: the token exchange service
}

// DescribeEndpoints asks DescribeEndpoint for the ATS data endpoint and the
// credential provider endpoint, for installer configs and enrollment.
func (p *Provider) DescribeEndpoints(ctx context.Context) (Endpoints, error) {
	var e Endpoints
	for _, x := range []struct {
		typ string
		dst *string
	}{{"iot:Data-ATS", &e.Data}, {"iot:CredentialProvider", &e.Credential}} {
		out, err := p.iot.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: sdkaws.String(x.typ)})
		if err != nil {
			return Endpoints{}, mapErr(err, "describe the %s endpoint", x.typ)
		}
		*x.dst = sdkaws.ToString(out.EndpointAddress)
	}
	return e, nil
}

// PresignArtifact returns a short-lived URL that downloads an existing
// artifact straight from S3 without AWS credentials (errkind.NotFound when
// it does not exist); ttl is clamped to 1 s..7 days, S3's SigV4 limit (CDF
// templates ask for up to 604800 s). With temporary credentials (a role) the
// URL stops working when those credentials expire, whatever ttl says.
func (p *Provider) PresignArtifact(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := local.CheckArtifactKey(key); err != nil {
		return "", err
	}
	ttl = min(max(ttl, time.Second), 7*24*time.Hour)
	full := p.prefix + key
	// A missing artifact is the API's 404, not S3's at the redirect target.
	if _, err := p.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &p.bucket, Key: &full}); err != nil {
		return "", mapErr(err, "artifact s3://%s/%s", p.bucket, full)
	}
	req, err := p.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &p.bucket, Key: &full}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("presign s3://%s/%s: %w", p.bucket, full, err)
	}
	return req.URL, nil
}
