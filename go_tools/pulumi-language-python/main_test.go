package main

import (
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func TestProgramEnvironmentPassesAnObjectEvenWithNoConfig(t *testing.T) {
	env, err := programEnvironment(&pulumirpc.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PULUMI_CONFIG={}", "PULUMI_CONFIG_SECRET_KEYS=[]"}
	for i := range want {
		if env[i] != want[i] {
			t.Errorf("env[%d] = %q, want %q", i, env[i], want[i])
		}
	}
}

func TestProgramEnvironmentCarriesConfigAndSecretKeys(t *testing.T) {
	env, err := programEnvironment(&pulumirpc.RunRequest{
		Config:           map[string]string{"proj:key": "value"},
		ConfigSecretKeys: []string{"proj:key"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if env[0] != `PULUMI_CONFIG={"proj:key":"value"}` || env[1] != `PULUMI_CONFIG_SECRET_KEYS=["proj:key"]` {
		t.Errorf("unexpected environment %q", env)
	}
}

func TestEngineAddressIsTheLastPositionalArgument(t *testing.T) {
	got, err := engineAddressFrom([]string{"--logtostderr", "-v=9", "--tracing", "http://trace", "127.0.0.1:1234"})
	if err != nil || got != "127.0.0.1:1234" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := engineAddressFrom([]string{"--logtostderr"}); err == nil {
		t.Error("expected an error without an engine address")
	}
}
