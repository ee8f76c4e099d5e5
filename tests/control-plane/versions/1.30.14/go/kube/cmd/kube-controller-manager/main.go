// Command kube-controller-manager is the upstream controller manager (garbage collector, namespace
// controller and the rest), built from k8s.io/kubernetes at the pinned release.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
