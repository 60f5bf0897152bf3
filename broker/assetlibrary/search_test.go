package assetlibrary

import (
	"encoding/json"
	"testing"
)

// The Asset Library swagger's own example: entries with an outgoing
// "manufactured_by" relation whose name starts with "Mfg+Asy Inc".
func TestQueryStringEncoding(t *testing.T) {
	tests := []struct {
		name, query, want string
	}{
		{
			"swagger traversal example",
			`{"startsWith":[{"traversals":[{"relation":"manufactured_by","direction":"out"}],"field":"name","value":"Mfg+Asy Inc"}]}`,
			"startsWith=manufactured_by%3Aout%3Aname%3AMfg%252BAsy%2520Inc",
		},
		{
			"types become type, numbers and booleans as JavaScript prints them",
			`{"types":["device","gateway"],"ntypes":["group"],"ancestorPath":"/site/a","includeAncestor":true,"lte":[{"field":"fw","value":3.0}],"eq":[{"field":"on","value":false}],"sort":"deviceId:asc"}`,
			"ancestorPath=%2Fsite%2Fa&eq=on%3Afalse&includeAncestor=true&lte=fw%3A3&ntype=group&sort=deviceId%3Aasc&type=device&type=gateway",
		},
		{
			"colon in a value is escaped twice",
			`{"eq":[{"field":"model","value":"a:b"}]}`,
			"eq=model%3Aa%253Ab",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr, err := ParseQuery(json.RawMessage(tt.query))
			if err != nil {
				t.Fatalf("ParseQuery: %v", err)
			}
			q, err := sr.queryString()
			if err != nil {
				t.Fatalf("queryString: %v", err)
			}
			if got := q.Encode(); got != tt.want {
				t.Errorf("query =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestEncodeURIComponent(t *testing.T) {
	in := "a-_.!~*'()/:? +%é"
	want := "a-_.!~*'()%2F%3A%3F%20%2B%25%C3%A9"
	if got := encodeURIComponent(in); got != want {
		t.Errorf("encodeURIComponent(%q) = %q, want %q", in, got, want)
	}
}
