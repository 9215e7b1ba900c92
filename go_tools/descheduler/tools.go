//go:build tools

// Package tools pins the Kubernetes descheduler that the stack deploys per
// cluster to move the gateway's pods back onto ECS: the live tests run this
// binary against the local control plane, as they run kube-scheduler.
package tools

import (
	_ "sigs.k8s.io/descheduler/cmd/descheduler"
)
