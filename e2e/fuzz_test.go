package e2e

import (
	"net/url"
	"strings"
	"testing"
)

// fuzzRoutes are the routes that decode a request body or a name. NAME is
// replaced by the fuzzed name, so path handling sees hostile input too.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/templates"},
	{"PUT", "/templates/NAME"},
	{"POST", "/coreTasks"},
	{"POST", "/cores/NAME/deviceTasks"},
	{"PUT", "/provisioningTemplates/NAME"},
	{"PUT", "/registry/policies/NAME"},
	{"POST", "/certificateAuthorities"},
	{"POST", "/cores/NAME/enrollmentTokens"},
	{"POST", "/enroll"},
	{"DELETE", "/devices/NAME?deprovision=NAME"},
	{"GET", "/cores?count=NAME"},
	{"GET", "/templates/NAME/versions/NAME"},
	{"GET", "/artifacts/NAME"},
}

// FuzzAPI sends arbitrary bodies and names to the decoding routes of one
// running broker: the answer is a success or a 4xx with a message, never a
// 5xx, and the broker keeps serving.
func FuzzAPI(f *testing.F) {
	seeds := []string{
		`{"name":"t1","components":[{"key":"aws.greengrass.Cli","version":"2.4.0"}]}`,
		`{"name":"t1","components":[{"key":"aws.greengrass.Cli","version":"2.4.1"}]}`,
		`{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"c1","provisioningTemplate":"ggfleet-core","provisioningParameters":{"ThingName":"c1"}}]}`,
		`{"type":"Create","devices":[{"name":"d1","provisioningTemplate":"ggfleet-client-device"}]}`,
		`{"Parameters":{"ThingName":{"Type":"String"}},"Resources":{"thing":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":{"Ref":"ThingName"}}}}}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}`,
		`{"commonName":"ca2","daysExpiry":30,"keyAlgorithm":"EC-P256"}`,
		`{"certificatePem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----","privateKeyPem":"x"}`,
		`{"expiresInSeconds":120}`,
		`{"coreName":"c1","token":"gge_x","csrPem":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}`,
		`{"type":"Delete","coreVersion":"2.5.0","options":{"deprovisionCores":true},"cores":[{"name":"c1","provisioningTemplate":"x"}]}`,
		`{"name":1e400}`, `[[[[[[]]]]]]`, `"x"`, `null`, ``,
	}
	for i, s := range seeds {
		f.Add(uint8(i), "c1", []byte(s))
		f.Add(uint8(i+5), "x:y/../..", []byte(s))
	}
	b := startBroker(f)
	f.Fuzz(func(t *testing.T, route uint8, name string, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path := strings.Replace(rt.path, "NAME", url.PathEscape(name), 1)
		path = strings.ReplaceAll(path, "NAME", url.QueryEscape(name))
		bt := *b
		bt.t = t
		var payload any
		if rt.method == "POST" || rt.method == "PUT" {
			payload = body
		}
		r := bt.do(rt.method, path, payload)
		if r.Status >= 500 {
			t.Fatalf("%s %s with %q: status %d %s\nlog tail: %s", rt.method, path, body, r.Status, r.Body, tail(b.log(), 2000))
		}
		if r.Status >= 400 && r.Message() == "" {
			t.Fatalf("%s %s with %q: %d without a message: %s", rt.method, path, body, r.Status, r.Body)
		}
	})
}
