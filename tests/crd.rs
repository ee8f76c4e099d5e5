//! The CRD in `crds/` is generated from the Rust types; this fails when the two drift.

use jwt_key_operator::crd::{JwtSigningKey, crd_yaml};

#[test]
fn the_crd_in_the_repository_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/jwtsigningkeys.yaml");
    let stored = std::fs::read_to_string(path).expect("crds/jwtsigningkeys.yaml exists");
    assert!(
        stored == crd_yaml(),
        "crds/jwtsigningkeys.yaml is stale: regenerate it with `cargo run -- crd | tee crds/jwtsigningkeys.yaml > charts/jwt-key-operator/files/jwtsigningkeys.yaml`"
    );
}

#[test]
fn the_sample_deserializes_into_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jwtsigningkey.yaml");
    let key: JwtSigningKey =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(key.secret_name(), "auth-signing-key");
    assert!(key.spec.timing().is_ok());
}
