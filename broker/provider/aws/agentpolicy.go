package aws

// AgentPolicyName is the IoT policy the broker attaches to the certificate
// an agent gets from POST /enroll in aws mode.
const AgentPolicyName = "ggfleet-agent"

// AgentPolicyDocument lets an agent connect to AWS IoT Core only with the
// client id <thing>-ggagent (the thing being its certificate's common name,
// so it never collides with the nucleus's client id <thing>) and use only
// its own topics, ggfleet/things/<thing>/*.
const AgentPolicyDocument = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": "arn:aws:iot:*:*:client/${iot:Certificate.Subject.CommonName}-ggagent"
    },
    {
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:Receive", "iot:RetainPublish"],
      "Resource": "arn:aws:iot:*:*:topic/ggfleet/things/${iot:Certificate.Subject.CommonName}/*"
    },
    {
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": "arn:aws:iot:*:*:topicfilter/ggfleet/things/${iot:Certificate.Subject.CommonName}/*"
    }
  ]
}`
