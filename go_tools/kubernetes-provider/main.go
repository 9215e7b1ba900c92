// Command pulumi-resource-kubernetes serves the pinned pulumi-kubernetes
// provider. The upstream main embeds two files that `go generate` writes and
// the module does not ship; go_tools/toolchain.py writes them beside this file
// (the schema with the release version stamped in) before it builds.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
