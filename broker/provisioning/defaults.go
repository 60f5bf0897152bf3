package provisioning

import "fmt"

// Names of the templates and policies a fresh broker seeds.
const (
	DefaultCoreTemplate         = "ggfleet-core"
	DefaultClientDeviceTemplate = "ggfleet-client-device"
	DefaultCorePolicy           = "ggfleet-core-policy"
	DefaultClientDevicePolicy   = "ggfleet-client-device-policy"
)

// defaultTemplate is the seed's example template with the broker making the
// certificate (CDF.createDeviceCertificate) and one policy attached.
const defaultTemplate = `{
  "Parameters": {
    "ThingName": {"Type": "String"},
    "CertificatePem": {"Type": "String"},
    "CaCertificatePem": {"Type": "String"}
  },
  "Resources": {
    "thing": {
      "Type": "AWS::IoT::Thing",
      "Properties": {"ThingName": {"Ref": "ThingName"}},
      "OverrideSettings": {"ThingTypeName": "REPLACE"}
    },
    "certificate": {
      "Type": "AWS::IoT::Certificate",
      "Properties": {
        "CACertificatePem": {"Ref": "CaCertificatePem"},
        "CertificatePem": {"Ref": "CertificatePem"},
        "Status": "ACTIVE"
      },
      "OverrideSettings": {"Status": "REPLACE"}
    },
    "policy": {
      "Type": "AWS::IoT::Policy",
      "Properties": {"PolicyName": %q}
    }
  },
  "CDF": {"createDeviceCertificate": true}
}
`

// DefaultTemplates are the provisioning templates a fresh broker seeds, so
// that cores and client devices can be provisioned out of the box with
// provisioningParameters {"ThingName": "<name>"}.
func DefaultTemplates() map[string][]byte {
	return map[string][]byte{
		DefaultCoreTemplate:         fmt.Appendf(nil, defaultTemplate, DefaultCorePolicy),
		DefaultClientDeviceTemplate: fmt.Appendf(nil, defaultTemplate, DefaultClientDevicePolicy),
	}
}

// corePolicy lets a core connect as itself (and as its agent), use its own
// ggfleet topics, its shadows and jobs, and the Greengrass data plane.
const corePolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": [
        "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}",
        "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}-ggagent"
      ]
    },
    {
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:Receive"],
      "Resource": [
        "arn:aws:iot:*:*:topic/ggfleet/things/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}-gci/*"
      ]
    },
    {
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": [
        "arn:aws:iot:*:*:topicfilter/ggfleet/things/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}-gci/*"
      ]
    },
    {
      "Effect": "Allow",
      "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"],
      "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}*"
    },
    {
      "Effect": "Allow",
      "Action": "iot:AssumeRoleWithCertificate",
      "Resource": "arn:aws:iot:*:*:rolealias/GreengrassV2TokenExchangeRoleAlias"
    },
    {
      "Effect": "Allow",
      "Action": ["greengrass:*"],
      "Resource": "*"
    }
  ]
}
`

// clientDevicePolicy lets a client device connect as itself, use its own
// ggfleet topics and shadow, and discover its core.
const clientDevicePolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"
    },
    {
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:Receive"],
      "Resource": [
        "arn:aws:iot:*:*:topic/ggfleet/things/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"
      ]
    },
    {
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": [
        "arn:aws:iot:*:*:topicfilter/ggfleet/things/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"
      ]
    },
    {
      "Effect": "Allow",
      "Action": "greengrass:Discover",
      "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"
    }
  ]
}
`

// DefaultPolicies are the IoT policies the default templates attach, by name.
func DefaultPolicies() map[string]string {
	return map[string]string{
		DefaultCorePolicy:         corePolicy,
		DefaultClientDevicePolicy: clientDevicePolicy,
	}
}
