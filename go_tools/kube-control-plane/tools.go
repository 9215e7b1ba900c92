//go:build tools

// Package tools pins the Kubernetes control plane that the cluster tests run:
// etcd, kube-apiserver and kube-scheduler, built from their own main packages.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
