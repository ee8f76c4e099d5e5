// Command kube-scheduler is the upstream scheduler, built from k8s.io/kubernetes at the pinned release,
// for the test cluster's optional node (tests/control-plane/node).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
