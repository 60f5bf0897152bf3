package aws

// BrokerPolicyName is the IoT policy attached to the broker's own
// certificate, with which every replica connects to AWS IoT Core to
// consume what agents publish.
const BrokerPolicyName = "ggfleet-broker"

// BrokerClientIDPrefix starts the MQTT client id of every broker replica
// (ggfleet-broker-<replica>); the broker policy allows no other client id.
const BrokerClientIDPrefix = "ggfleet-broker-"

// BrokerPolicyDocument lets the broker connect only with a client id that
// starts with BrokerClientIDPrefix, and publish, receive and subscribe
// only under ggfleet/. Shared subscriptions are authorized by IoT Core as
// the topic filter $share/<group>/<filter>, so the replicas' group
// ("ggfleet") is allowed explicitly.
const BrokerPolicyDocument = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": "arn:aws:iot:*:*:client/` + BrokerClientIDPrefix + `*"
    },
    {
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:RetainPublish", "iot:Receive"],
      "Resource": "arn:aws:iot:*:*:topic/ggfleet/*"
    },
    {
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": [
        "arn:aws:iot:*:*:topicfilter/ggfleet/*",
        "arn:aws:iot:*:*:topicfilter/$share/ggfleet/ggfleet/*"
      ]
    }
  ]
}`
