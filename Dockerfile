# jwt-key-operator image: the release binary on distroless/cc, running as a non-root user.
#
# Build from the repository root, on a machine with Docker or Podman:
#   docker build -t registry.example.com/jwt-key-operator:0.1.0 .
# then set image.repository / image.tag in the Helm chart. Without a container engine,
# `scripts/release VERSION` writes an equivalent image as an OCI archive (the same user, entrypoint
# and port, the build machine's glibc and the libraries the binary loads; without the kubectl
# plugin); the tests run that one, not this file (docs/release.md).

# glibc, as on the machines where the tests, the benches and the node's pods run the operator: its
# memory and CPU figures (docs/performance.md) are glibc's malloc, whose freed pages the binary hands
# back (src/allocator.rs). A static musl build would bring musl's allocator, which nothing here
# measures.
# The builder's Debian 12 matches the runtime's, so the binary needs no newer glibc than it has.
# The image's gcc builds aws-lc (key generation and TLS), which aws-lc-sys compiles with the cc crate.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The kubectl plugin ships too, for `kubectl exec` or `kubectl cp` out of the image
# (crates/kubectl-jwtkeys; docs/operations.md).
RUN cargo build --release --locked --workspace --bin jwt-key-operator --bin kubectl-jwtkeys \
 && cp target/release/jwt-key-operator target/release/kubectl-jwtkeys /

# distroless/cc: glibc, libgcc_s, CA certificates and /etc/passwd; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /jwt-key-operator /kubectl-jwtkeys /usr/local/bin/
# 65532 is distroless's "nonroot" user. The chart pins no UID or GID: it sets runAsNonRoot, which
# needs this numeric USER, and platforms that assign UIDs (OpenShift) may run it as another one.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/jwt-key-operator"]
CMD ["run"]
