package aws_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/provider/providertest"
)

// rawIoT is a plain SDK IoT client on the fake, without the provider's
// checks, to see what the fake itself accepts.
func rawIoT(fake *awsfake.Fake) *iot.Client {
	return iot.New(iot.Options{
		Region:           awsfake.Region,
		BaseEndpoint:     ptr(fake.URL()),
		Credentials:      awstest.Credentials,
		RetryMaxAttempts: 1,
	})
}

func ptr[T any](v T) *T { return &v }

func rawCreateThing(ctx context.Context, c *iot.Client, name string) error {
	_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: &name})
	return err
}

func rawRegisterWithStatus(ctx context.Context, t *testing.T, c *iot.Client, status string) error {
	t.Helper()
	pemText := providertest.NewIssuer(t).Issue(t, "x")
	_, err := c.RegisterCertificateWithoutCA(ctx, &iot.RegisterCertificateWithoutCAInput{CertificatePem: &pemText, Status: iottypes.CertificateStatus(status)})
	return err
}

func rawAttach(ctx context.Context, c *iot.Client, thing, principal string) error {
	_, err := c.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: &thing, Principal: &principal})
	return err
}

func isInvalidRequest(err error) bool {
	var e *iottypes.InvalidRequestException
	return errors.As(err, &e)
}

// httpStatus is the HTTP status of an SDK error's response, or 0.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// unsignedStatus GETs url without a SigV4 signature.
func unsignedStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
