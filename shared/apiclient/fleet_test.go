package apiclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCreate(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer tok":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"message":"bad token"}`))
		case r.URL.Path == "/coreTasks":
			w.Header().Set("Location", "/coreTasks/abc")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/bad":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"message":"cores is required"}`))
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Run("location", func(t *testing.T) {
		loc, err := c.Create(ctx, http.MethodPost, "/coreTasks", map[string]string{"type": "Create"})
		if err != nil || loc != "/coreTasks/abc" {
			t.Fatalf("Create = %q, %v", loc, err)
		}
	})
	t.Run("api error", func(t *testing.T) {
		_, err := c.Create(ctx, http.MethodPost, "/bad", struct{}{})
		ae, ok := errors.AsType[*APIError](err)
		if !ok || ae.Status != 400 || ae.Message != "cores is required" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no location", func(t *testing.T) {
		if _, err := c.Create(ctx, http.MethodPost, "/other", struct{}{}); err == nil {
			t.Fatal("an answer without Location was accepted")
		}
	})
	t.Run("unauthorized", func(t *testing.T) {
		anon, _ := New(Config{BaseURL: srv.URL})
		_, err := anon.Create(ctx, http.MethodPost, "/coreTasks", struct{}{})
		if ae, ok := errors.AsType[*APIError](err); !ok || ae.Status != 401 {
			t.Fatalf("err = %v", err)
		}
	})
}
