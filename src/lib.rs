//! jwt-key-operator: generates, publishes and rotates RSA JWT signing keys on Kubernetes.
// The one exception is `allocator::release_free_memory`, a call into glibc's malloc.
#![deny(unsafe_code)]

pub mod allocator;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod duration;
#[doc(hidden)]
pub mod invariants;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod run;
pub mod schedule;
pub mod serve_jwks;
pub mod time;
pub mod watch;
