package aws

import (
	"context"
	"fmt"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/greengrassv2"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// publicPrefix starts the names of the components AWS publishes.
const publicPrefix = "aws.greengrass."

// CheckComponent confirms that a component version exists in Greengrass
// (templates.ComponentChecker), as CDF does at template save: either as a
// public component AWS publishes (arn:aws:greengrass:REGION:aws:components:
// KEY:versions:V) or as a private component of this account
// (…:ACCOUNT:components:…). The likelier one is asked first (public for
// aws.greengrass.* names), the other only when it is missing. A version
// that is neither is errkind.Invalid naming it; throttling that outlasts
// the retries is errkind.Unavailable.
func (p *Provider) CheckComponent(ctx context.Context, key, version string) error {
	if key == "" || version == "" || strings.ContainsAny(key+version, ": /") {
		return errkind.New(errkind.Invalid, "component %q version %q is not a valid component name and version", key, version)
	}
	base, err := p.iotARNBase(ctx)
	if err != nil {
		return err
	}
	// base is "arn:<partition>:iot:<region>:<account>:".
	parts := strings.Split(base, ":")
	partition, region, account := parts[1], parts[3], parts[4]
	owners := []string{"aws", account}
	if !strings.HasPrefix(key, publicPrefix) {
		owners = []string{account, "aws"}
	}
	for _, owner := range owners {
		arn := fmt.Sprintf("arn:%s:greengrass:%s:%s:components:%s:versions:%s", partition, region, owner, key, version)
		_, err := p.gg.DescribeComponent(ctx, &greengrassv2.DescribeComponentInput{Arn: &arn})
		if err == nil {
			return nil
		}
		if !hasCode(err, notFoundCodes...) {
			return mapErr(err, "describe component %s:%s", key, version)
		}
	}
	return errkind.New(errkind.Invalid, "INVALID_COMPONENT: %s:%s: AWS IoT Greengrass has no such component version, neither public (published by AWS) nor private in account %s, region %s", key, version, account, region)
}

// iotARNBase returns "arn:<partition>:iot:<region>:<account>:", learnt
// from an earlier response or, the first time, from the agent policy's ARN
// (the broker creates that policy at start).
func (p *Provider) iotARNBase(ctx context.Context) (string, error) {
	p.mu.Lock()
	base := p.arnBase
	p.mu.Unlock()
	if base != "" {
		return base, nil
	}
	name := AgentPolicyName
	out, err := p.iot.GetPolicy(ctx, &iot.GetPolicyInput{PolicyName: &name})
	if err != nil {
		return "", mapErr(err, "find the AWS account and region from policy %s", name)
	}
	p.learnARN(out.PolicyArn)
	p.mu.Lock()
	base = p.arnBase
	p.mu.Unlock()
	if base == "" {
		return "", fmt.Errorf("find the AWS account and region: policy %s has no IoT ARN (%q)", name, sdkaws.ToString(out.PolicyArn))
	}
	return base, nil
}
