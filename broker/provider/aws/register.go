package aws

import (
	"context"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provisioning"
)

var _ provisioning.ThingRegistrar = (*Provider)(nil)

// RegisterThing applies a provisioning template body (without the CDF
// section) with its parameters through AWS IoT RegisterThing, in one call,
// and returns the PEM of the template's certificate ("" when it has none).
// RegisterThing reuses existing things, certificates and policies, so the
// SDK's retries and a re-run after a crash make nothing twice. A template
// AWS refuses (InvalidRequestException, ResourceRegistrationFailureException,
// CertificateValidationException) is errkind.Invalid with AWS's message.
func (p *Provider) RegisterThing(ctx context.Context, templateBody string, params map[string]string) (string, error) {
	if templateBody == "" {
		return "", errkind.New(errkind.Invalid, "register thing: the template body is empty")
	}
	out, err := p.iot.RegisterThing(ctx, &iot.RegisterThingInput{TemplateBody: &templateBody, Parameters: params})
	if hasCode(err, "ResourceRegistrationFailureException") {
		return "", errkind.Wrap(errkind.Invalid, err, "register thing: AWS %s: %s", awsCode(err), awsMessage(err))
	}
	if err != nil {
		return "", mapErr(err, "register thing")
	}
	if a, ok := out.ResourceArns["thing"]; ok {
		p.learnARN(&a)
		// AWS does not report creation times: remember when this process
		// first saw the thing, as CreateThing does.
		if _, name, found := strings.Cut(a, ":thing/"); found {
			p.mu.Lock()
			if _, known := p.created[name]; !known {
				p.created[name] = p.nowForTs()
			}
			p.mu.Unlock()
		}
	}
	return sdkaws.ToString(out.CertificatePem), nil
}
