//! The `JwtSigningKey` custom resource (`jwtkeys.dev/v1alpha1`): spec, status and the CRD the API
//! server validates against.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

/// API group of the custom resource.
pub const GROUP: &str = "jwtkeys.dev";
/// Annotation that requests a rotation; each new value acts once.
pub const ROTATE_ANNOTATION: &str = "jwtkeys.dev/rotate";
/// Annotation that revokes keys by kid (comma separated); each new value acts once.
pub const REVOKE_ANNOTATION: &str = "jwtkeys.dev/revoke";
/// Namespace annotation: the keys a namespace accepts copies from, comma-separated
/// `<namespace>/<name>` or `<namespace>/*`.
pub const ACCEPT_FROM_ANNOTATION: &str = "jwtkeys.dev/accept-from";

/// Whether a namespace's `jwtkeys.dev/accept-from` value accepts copies of key `namespace/name`.
pub fn accepts(accept_from: Option<&str>, namespace: &str, name: &str) -> bool {
    accept_from.is_some_and(|value| {
        value.split(',').map(str::trim).any(|entry| {
            entry
                .split_once('/')
                .is_some_and(|(ns, key)| ns == namespace && (key == "*" || key == name))
        })
    })
}

/// Go-style duration: a sequence of decimal numbers with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`),
/// such as `720h`, `15m` or `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Desired configuration of a JWT signing key and its rotation schedule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "jwtkeys.dev",
    version = "v1alpha1",
    kind = "JwtSigningKey",
    plural = "jwtsigningkeys",
    shortname = "jsk",
    namespaced,
    status = "JwtSigningKeyStatus",
    doc = "A key pair for signing JWTs (RSA, P-256, P-384 or Ed25519), rotated on a schedule. The \
           signing key is written to a Secret; every public key that verifiers may need is published \
           as JWKS and PEM in ConfigMaps.",
    printcolumn = r#"{"name":"Algorithm","type":"string","jsonPath":".spec.algorithm"}"#,
    printcolumn = r#"{"name":"Active Key","type":"string","jsonPath":".status.activeKeyId"}"#,
    printcolumn = r#"{"name":"Next Rotation","type":"string","jsonPath":".status.nextRotationTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.propagationDelay) < duration(self.rotationInterval)")
        .message("propagationDelay must be shorter than rotationInterval")
        .field_path(".propagationDelay")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new(
        "duration(self.maxTokenLifetime).getMilliseconds() + duration(self.propagationDelay).getMilliseconds() \
         <= (has(self.keySize) && self.keySize == 4096 ? 55 : 62) * duration(self.rotationInterval).getMilliseconds()"
    )
        .message("maxTokenLifetime + propagationDelay must be at most 62 x rotationInterval (55 x with \
                  keySize 4096), or more than 64 keys (57 RSA-4096 keys) would be published at once \
                  and the JWKS could exceed 50000 bytes")
        .field_path(".maxTokenLifetime")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.keySize) || self.algorithm.startsWith('RS') || self.algorithm.startsWith('PS')")
        .message("keySize applies to RSA algorithms only (RS256 ... PS512); remove it for ES256, ES384 and EdDSA, \
                  whose curve fixes the key size")
        .field_path(".keySize")
        .reason(Reason::FieldValueForbidden)
)]
pub struct JwtSigningKeySpec {
    /// JWS algorithm the keys sign with. Changing it takes effect with the next key.
    #[serde(default)]
    pub algorithm: Algorithm,

    /// RSA modulus size in bits, for RS* and PS* only (default 2048); refused with ES256, ES384
    /// and EdDSA, whose curve fixes the size. Changing it takes effect with the next key.
    // No schema default: the API server would write 2048 into every object, EC and OKP included.
    // Not nullable either, so that the API server prunes `keySize: null` instead of refusing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "u32",
        range(min = 2048, max = 4096),
        extend("enum" = [2048, 3072, 4096], "format" = "int32")
    )]
    pub key_size: Option<u32>,

    /// How long each key signs before the next key takes over (Go-style duration, minimum 10s).
    #[serde(default = "default_rotation_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('10s')").message("rotationInterval must be at least 10s")
    )]
    pub rotation_interval: String,

    /// Upper bound for a published change to reach every verifier (kubelet volume sync plus the
    /// verifier's cache). The next key is published this long before it signs. Must be shorter than
    /// rotationInterval.
    #[serde(default = "default_propagation_delay")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub propagation_delay: String,

    /// Longest lifetime (exp - iat) of the tokens the issuer signs. A retired key stays published for
    /// maxTokenLifetime + propagationDelay.
    #[serde(default = "default_max_token_lifetime")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(
        validation = Rule::new("duration(self) > duration('0s')").message("maxTokenLifetime must be positive")
    )]
    pub max_token_lifetime: String,

    /// Name of the Secret that holds the signing key. Defaults to `<name>-signing-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,

    /// Name of the ConfigMap that publishes the public keys. Defaults to `<name>-jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub config_map_name: Option<String>,

    /// Labels and annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<ObjectTemplate>,

    /// Labels and annotations copied onto every published ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_template: Option<ObjectTemplate>,

    /// Where else to publish the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSpec>,

    /// What deleting this JwtSigningKey (or its CRD) does to the Secret and the ConfigMaps.
    /// `Delete` (default): the Secret and the ConfigMap in this namespace go with the key (owner
    /// reference), and the operator removes the copies in other namespaces (finalizer). `Retain`:
    /// they stay, with their keys and labels, whether or not the operator runs; a JwtSigningKey
    /// created again with the same name in the same namespace adopts them and goes on with the
    /// same keys and schedule. A change applies to the objects with the operator's next write
    /// (status.observedGeneration shows it).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What deleting a JwtSigningKey does to the objects the operator wrote for it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// The Secret and every ConfigMap (home and copies) stay; they carry no owner reference, and
    /// the key no finalizer.
    Retain,
    /// The Secret and the home ConfigMap are garbage-collected with the key; the operator removes
    /// the copies in other namespaces before the key goes.
    #[default]
    Delete,
}

/// JWS algorithms: RSA (PKCS#1 v1.5 and PSS), ECDSA on P-256 and P-384, and EdDSA on Ed25519.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[default]
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA on Ed25519 (RFC 8037).
    EdDSA,
}

/// The kind of key an algorithm signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// An RSA key (`kty: RSA`) of 2048, 3072 or 4096 bits.
    Rsa,
    /// An EC key on NIST P-256 (`kty: EC, crv: P-256`).
    P256,
    /// An EC key on NIST P-384 (`kty: EC, crv: P-384`).
    P384,
    /// An Ed25519 key (`kty: OKP, crv: Ed25519`).
    Ed25519,
}

impl KeyType {
    /// How the key type is named in events and errors: `RSA`, `P-256`, `P-384`, `Ed25519`.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::P256 => "P-256",
            KeyType::P384 => "P-384",
            KeyType::Ed25519 => "Ed25519",
        }
    }

    /// The algorithm a key of this type is published with when nothing else is known: the only
    /// one for EC and OKP keys, RS256 for RSA.
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            KeyType::Rsa => Algorithm::RS256,
            KeyType::P256 => Algorithm::ES256,
            KeyType::P384 => Algorithm::ES384,
            KeyType::Ed25519 => Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Algorithm {
    /// Every algorithm, in the order of the CRD's enum.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name, e.g. `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm of a JOSE name (exact, case-sensitive as JOSE is).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    /// The kind of key this algorithm signs with.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyType::Rsa,
            Algorithm::ES256 => KeyType::P256,
            Algorithm::ES384 => KeyType::P384,
            Algorithm::EdDSA => KeyType::Ed25519,
        }
    }

    /// Whether the algorithm signs with RSA keys (the only ones `keySize` applies to).
    pub fn is_rsa(self) -> bool {
        self.key_type() == KeyType::Rsa
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata copied onto a generated object.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct ObjectTemplate {
    /// Labels added to the object. The operator's own labels take precedence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Publication of the ConfigMap beyond the JwtSigningKey's own namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// Also publish the ConfigMap, under the same name, into every namespace whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// RSA modulus size when `keySize` is not set.
pub const DEFAULT_RSA_KEY_SIZE: u32 = 2048;

fn default_rotation_interval() -> String {
    "720h".into()
}
fn default_propagation_delay() -> String {
    "30m".into()
}
fn default_max_token_lifetime() -> String {
    "24h".into()
}

/// Observed state of a JwtSigningKey, written by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtSigningKeyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` tells whether the keys are published and the signing key is in place.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Key id (RFC 7638 thumbprint) of the key that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_id: Option<String>,
    /// Every published key and its schedule.
    #[serde(default)]
    pub keys: Vec<KeyStatus>,
    /// When the signing key last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,
    /// When the signing key changes next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    /// Namespaces, besides this one, that hold a copy of the ConfigMap.
    #[serde(default)]
    pub published_namespaces: Vec<String>,
    /// Namespaces the selector matches that do not accept copies of this key (their
    /// `jwtkeys.dev/accept-from` annotation does not name it); nothing is written there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unaccepted_namespaces: Vec<String>,
    /// Last value of the `jwtkeys.dev/rotate` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotate_annotation: Option<String>,
    /// Last value of the `jwtkeys.dev/revoke` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revoke_annotation: Option<String>,
    /// Key ids revoked through `jwtkeys.dev/revoke`; they are never published again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_key_ids: Vec<String>,
}

/// A published key and its schedule (RFC 3339 times).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// Key id: RFC 7638 JWK thumbprint (SHA-256, base64url without padding).
    pub kid: String,
    /// Next (published, not yet signing), Active (signing) or Retired (published for verification only).
    pub state: KeyState,
    /// Algorithm the key signs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// When the key was generated and published.
    pub created_at: String,
    /// When the key starts (or started) signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activates_at: Option<String>,
    /// When the key stops (or stopped) signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<String>,
    /// When the key is removed from every ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after: Option<String>,
}

/// Lifecycle state of a published key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, starts signing at `activatesAt`.
    Next,
    /// The signing key.
    Active,
    /// No longer signs; published until `removeAfter`.
    Retired,
}

impl JwtSigningKey {
    /// Name of the Secret holding the signing key.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-signing-key", self.name_any()))
    }

    /// Name of the published ConfigMap(s).
    pub fn config_map_name(&self) -> String {
        self.spec
            .config_map_name
            .clone()
            .unwrap_or_else(|| format!("{}-jwks", self.name_any()))
    }
}

/// Durations of a spec, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// How long each key signs (R).
    pub rotation_interval: GoDuration,
    /// Publication lead and propagation bound (P).
    pub propagation_delay: GoDuration,
    /// Longest token lifetime (L).
    pub max_token_lifetime: GoDuration,
    /// Extra wait before a next key signs, for clock skew between replicas (not part of the spec:
    /// the operator's `--activation-margin`).
    pub activation_margin: GoDuration,
    /// Most keys published at once: [`MAX_PUBLISHED_KEYS`], fewer for key types whose JWKS would
    /// pass 50,000 bytes at that count ([`JwtSigningKeySpec::max_published_keys`]).
    pub max_published_keys: u64,
}

/// Default of [`Timing::activation_margin`].
pub const DEFAULT_ACTIVATION_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// A spec the schema accepted but the operator cannot act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// A duration field does not parse.
    #[error("spec.{field}: {source}")]
    Duration {
        /// Field name.
        field: &'static str,
        /// Parse failure.
        #[source]
        source: crate::duration::ParseError,
    },
    /// A rule the CRD also enforces, re-checked for objects stored before the rule existed.
    #[error("spec.{field}: {message}")]
    Rule {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Most keys a schedule may keep published at once.
pub const MAX_PUBLISHED_KEYS: u64 = 64;

/// Most 4096-bit RSA keys a schedule may keep published at once: 57 of them make a `jwks.json` of
/// about 48,500 bytes, 58 come within about 650 bytes of [`MAX_JWKS_BYTES`] and 59 pass it (a
/// unit test measures it). 2048- and 3072-bit RSA, EC and OKP keys fit 64 times (about 32,700,
/// 43,500, 17,400 (P-256), 20,100 (P-384) and 13,900 (Ed25519) bytes).
pub const MAX_PUBLISHED_RSA_4096_KEYS: u64 = 57;

/// Largest `jwks.json` the operator may publish: Nimbus JOSE+JWT, behind Spring Security, refuses
/// larger sets by default.
pub const MAX_JWKS_BYTES: usize = 50_000;

impl JwtSigningKeySpec {
    /// Parses and cross-checks the durations (the same rules the CRD enforces at admission).
    pub fn timing(&self) -> Result<Timing, SpecError> {
        let parse = |field: &'static str, value: &str| {
            value
                .parse::<GoDuration>()
                .map_err(|source| SpecError::Duration { field, source })
        };
        let timing = Timing {
            rotation_interval: parse("rotationInterval", &self.rotation_interval)?,
            propagation_delay: parse("propagationDelay", &self.propagation_delay)?,
            max_token_lifetime: parse("maxTokenLifetime", &self.max_token_lifetime)?,
            activation_margin: GoDuration::from(DEFAULT_ACTIVATION_MARGIN),
            max_published_keys: self.max_published_keys(),
        };
        let (r, p, l) = (
            timing.rotation_interval.as_millis(),
            timing.propagation_delay.as_millis(),
            timing.max_token_lifetime.as_millis(),
        );
        if r < 10_000 {
            return Err(SpecError::Rule {
                field: "rotationInterval",
                message: "must be at least 10s".into(),
            });
        }
        if p >= r {
            return Err(SpecError::Rule {
                field: "propagationDelay",
                message: "must be shorter than rotationInterval".into(),
            });
        }
        if l == 0 {
            return Err(SpecError::Rule {
                field: "maxTokenLifetime",
                message: "must be positive".into(),
            });
        }
        let max_keys = self.max_published_keys();
        if l + p > (max_keys as u128 - 2) * r {
            return Err(SpecError::Rule {
                field: "maxTokenLifetime",
                message: format!(
                    "maxTokenLifetime + propagationDelay must be at most {} x rotationInterval, \
                     or more than {max_keys} keys would be published at once and the JWKS could \
                     exceed {MAX_JWKS_BYTES} bytes",
                    max_keys - 2
                ),
            });
        }
        if let Some(selector) = self
            .publish
            .as_ref()
            .and_then(|p| p.namespace_selector.as_ref())
        {
            check_selector(selector)?;
        }
        match self.key_size {
            Some(_) if !self.algorithm.is_rsa() => {
                return Err(SpecError::Rule {
                    field: "keySize",
                    message: format!(
                        "keySize applies to RSA algorithms only; remove it for {}, whose curve \
                         fixes the key size",
                        self.algorithm
                    ),
                });
            }
            Some(size) if ![2048, 3072, 4096].contains(&size) => {
                return Err(SpecError::Rule {
                    field: "keySize",
                    message: format!("{size} is not one of 2048, 3072, 4096"),
                });
            }
            _ => {}
        }
        Ok(timing)
    }

    /// The RSA modulus size in bits (`keySize`, 2048 when unset); meaningless for EC and OKP
    /// algorithms, whose curve fixes the size.
    pub fn rsa_key_size(&self) -> u32 {
        self.key_size.unwrap_or(DEFAULT_RSA_KEY_SIZE)
    }

    /// Most keys this spec's schedule may keep published at once, so that `jwks.json` stays under
    /// [`MAX_JWKS_BYTES`]: 64, or 57 with 4096-bit RSA keys (the CRD's rule counts the same).
    pub fn max_published_keys(&self) -> u64 {
        if self.algorithm.is_rsa() && self.rsa_key_size() == 4096 {
            MAX_PUBLISHED_RSA_4096_KEYS
        } else {
            MAX_PUBLISHED_KEYS
        }
    }
}

/// Checks what the LabelSelector schema leaves open: known operators and their values.
fn check_selector(selector: &LabelSelector) -> Result<(), SpecError> {
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_ref().map_or(0, Vec::len);
        let problem = match expr.operator.as_str() {
            "In" | "NotIn" if values == 0 => {
                Some(format!("operator {} needs values", expr.operator))
            }
            "Exists" | "DoesNotExist" if values > 0 => {
                Some(format!("operator {} takes no values", expr.operator))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => None,
            other => Some(format!(
                "unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)"
            )),
        };
        if let Some(message) = problem {
            return Err(SpecError::Rule {
                field: "publish.namespaceSelector",
                message: format!("matchExpressions[{i}]: {message}"),
            });
        }
    }
    Ok(())
}

/// The CRD as YAML, as `jwt-key-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = JwtSigningKey::crd();
    let mut yaml =
        String::from("# Generated from the Rust types by `jwt-key-operator crd`. Do not edit.\n");
    yaml.push_str(&serde_saphyr::to_string(&crd).expect("the CRD serializes"));
    yaml
}

#[cfg(test)]
mod consent_tests {
    use super::accepts;

    #[test]
    fn a_namespace_accepts_only_the_keys_its_annotation_names() {
        let cases = [
            (None, false),
            (Some(""), false),
            (Some("auth/auth"), true),
            (Some("auth/*"), true),
            (Some("other/*, auth/auth"), true),
            (Some("auth/other"), false),
            (Some("authx/*"), false),
            (Some("*/*"), false),
            (Some("auth"), false),
        ];
        for (value, expected) in cases {
            assert_eq!(accepts(value, "auth", "auth"), expected, "{value:?}");
        }
    }
}

#[cfg(test)]
mod algorithm_tests;
