package sqlstore

import (
	"reflect"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"two statements", "CREATE TABLE a (x INT);\nCREATE TABLE b (y INT);\n", []string{"CREATE TABLE a (x INT)", "CREATE TABLE b (y INT)"}},
		{"semicolon in a comment", "-- one; two\nCREATE TABLE a (x INT);", []string{"CREATE TABLE a (x INT)"}},
		{"only comments", "-- nothing here;\n\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitStatements(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("splitStatements = %q, want %q", got, tt.want)
			}
		})
	}
}
