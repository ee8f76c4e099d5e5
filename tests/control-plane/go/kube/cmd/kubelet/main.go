// Command kubelet is the upstream node agent, built from k8s.io/kubernetes at the pinned release, for
// the test cluster's optional node (tests/control-plane/node).
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
