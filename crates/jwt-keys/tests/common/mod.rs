//! Test fixtures: keys in the operator's layout and a directory that the "kubelet" swaps.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An RSA key pair as the operator writes it.
#[derive(Clone)]
pub struct TestKey {
    /// PKCS#8 PEM.
    pub private_pem: String,
    /// SPKI PEM.
    pub public_pem: String,
    /// base64url modulus and exponent.
    pub n: String,
    pub e: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
}

impl TestKey {
    pub fn generate(bits: usize) -> TestKey {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => panic!("unsupported key size {bits}"),
        };
        let private = aws_lc_rs::rsa::KeyPair::generate(size).expect("generate key");
        let public = private.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let pkcs8: Pkcs8V1Der<'static> = private.as_der().unwrap();
        let spki: PublicKeyX509Der<'static> = public.as_der().unwrap();
        TestKey {
            private_pem: pem_of("PRIVATE KEY", pkcs8.as_ref()),
            public_pem: pem_of("PUBLIC KEY", spki.as_ref()),
            kid: thumbprint(&n, &e),
            n,
            e,
        }
    }

    /// The JWK the operator publishes for this key.
    pub fn jwk(&self, alg: &str) -> serde_json::Value {
        serde_json::json!({"kty": "RSA", "use": "sig", "alg": alg, "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// The Secret entries for this key as the signing key.
    pub fn secret_files(&self, alg: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            ("private.pem".into(), self.private_pem.clone().into_bytes()),
            ("public.pem".into(), self.public_pem.clone().into_bytes()),
            ("kid".into(), self.kid.clone().into_bytes()),
            ("algorithm".into(), alg.as_bytes().to_vec()),
        ]
    }
}

/// RFC 7638 JWK thumbprint of an RSA key: SHA-256 over the required members in
/// lexicographic order, base64url without padding.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// `n` distinct 2048-bit keys, generated once per test binary (key generation is slow in
/// debug builds, so tests share them).
pub fn keys(n: usize) -> Vec<TestKey> {
    static POOL: OnceLock<Vec<TestKey>> = OnceLock::new();
    const POOL_SIZE: usize = 5;
    assert!(n <= POOL_SIZE, "the pool holds {POOL_SIZE} keys");
    let pool = POOL.get_or_init(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..POOL_SIZE)
                .map(|_| scope.spawn(|| TestKey::generate(2048)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    pool[..n].to_vec()
}

/// The ConfigMap entries for a JWK set (jwks.json plus one `<kid>.pem` per key).
pub fn configmap_files(published: &[(&TestKey, &str)]) -> Vec<(String, Vec<u8>)> {
    let jwks = serde_json::json!({"keys": published.iter().map(|(k, alg)| k.jwk(alg)).collect::<Vec<_>>()});
    let mut files = vec![(
        "jwks.json".to_owned(),
        serde_json::to_vec_pretty(&jwks).unwrap(),
    )];
    for (key, _) in published {
        files.push((
            format!("{}.pem", key.kid),
            key.public_pem.clone().into_bytes(),
        ));
    }
    files
}

/// A directory laid out and updated the way the kubelet's atomic writer does it: the content
/// lives in a timestamped directory `..<ts>`, `..data` links to it, every visible file `name`
/// links to `..data/name`, and an update writes a new directory, points a new `..data_tmp`
/// link at it and renames that over `..data`.
pub struct KubeletDir {
    root: PathBuf,
    generation: u32,
    current: Option<PathBuf>,
    visible: Vec<String>,
}

impl KubeletDir {
    pub fn new(root: impl Into<PathBuf>, files: &[(String, Vec<u8>)]) -> KubeletDir {
        let root = root.into();
        std::fs::create_dir_all(&root).unwrap();
        let mut dir = KubeletDir {
            root,
            generation: 0,
            current: None,
            visible: Vec::new(),
        };
        dir.publish(files);
        dir
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Atomically replaces the whole content with `files`.
    pub fn publish(&mut self, files: &[(String, Vec<u8>)]) {
        self.generation += 1;
        let ts_name = format!("..2026_11_28_20_00_00.{:09}", self.generation);
        let ts_dir = self.root.join(&ts_name);
        std::fs::create_dir(&ts_dir).unwrap();
        for (name, content) in files {
            std::fs::write(ts_dir.join(name), content).unwrap();
        }
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&ts_name, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        let names: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
        for name in &names {
            let link = self.root.join(name);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        for old in self.visible.iter().filter(|old| !names.contains(old)) {
            let _ = std::fs::remove_file(self.root.join(old));
        }
        if let Some(previous) = self.current.replace(ts_dir) {
            std::fs::remove_dir_all(previous).unwrap();
        }
        self.visible = names;
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// PEM with LF line endings, as the operator writes it.
pub fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A key of any type, as the operator writes it: PKCS#8 private PEM, SPKI public PEM, the JWK
/// and its RFC 7638 thumbprint.
#[derive(Clone)]
pub struct AnyKey {
    pub alg: &'static str,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: serde_json::Value,
    pub kid: String,
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256_b64(text: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

impl AnyKey {
    pub fn generate(alg: &'static str) -> AnyKey {
        let (private_der, public_der, mut jwk, canonical): (
            Vec<u8>,
            Vec<u8>,
            serde_json::Value,
            String,
        ) = match alg {
            "ES256" | "ES384" => {
                let (signing, crv, size) = if alg == "ES256" {
                    (
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        "P-256",
                        32,
                    )
                } else {
                    (
                        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                        "P-384",
                        48,
                    )
                };
                let key = aws_lc_rs::signature::EcdsaKeyPair::generate(signing).unwrap();
                let point = key.public_key().as_ref();
                let (x, y) = (b64(&point[1..=size]), b64(&point[1 + size..]));
                let spki: PublicKeyX509Der<'static> = key.public_key().as_der().unwrap();
                (
                    key.to_pkcs8v1().unwrap().as_ref().to_vec(),
                    spki.as_ref().to_vec(),
                    serde_json::json!({"kty": "EC", "use": "sig", "alg": alg, "crv": crv, "x": x, "y": y}),
                    format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#),
                )
            }
            "EdDSA" => {
                let key = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
                let x = b64(key.public_key().as_ref());
                let spki: PublicKeyX509Der<'static> = key.public_key().as_der().unwrap();
                (
                    key.to_pkcs8v1().unwrap().as_ref().to_vec(),
                    spki.as_ref().to_vec(),
                    serde_json::json!({"kty": "OKP", "use": "sig", "alg": alg, "crv": "Ed25519", "x": x}),
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                )
            }
            _ => return AnyKey::rsa(keys(1).remove(0), alg),
        };
        let kid = sha256_b64(&canonical);
        jwk["kid"] = serde_json::json!(kid);
        AnyKey {
            alg,
            private_pem: pem_of("PRIVATE KEY", &private_der),
            public_pem: pem_of("PUBLIC KEY", &public_der),
            jwk,
            kid,
        }
    }

    /// An RSA key of the pool, published with `alg` (RS256, PS256, ...).
    pub fn rsa(key: TestKey, alg: &'static str) -> AnyKey {
        AnyKey {
            alg,
            jwk: key.jwk(alg),
            kid: key.kid,
            private_pem: key.private_pem,
            public_pem: key.public_pem,
        }
    }

    pub fn secret_files(&self) -> Vec<(String, Vec<u8>)> {
        vec![
            ("private.pem".into(), self.private_pem.clone().into_bytes()),
            ("public.pem".into(), self.public_pem.clone().into_bytes()),
            ("kid".into(), self.kid.clone().into_bytes()),
            ("algorithm".into(), self.alg.as_bytes().to_vec()),
        ]
    }
}

/// `n` distinct keys of `alg`: RSA ones from the pool of [`keys`], the others generated.
pub fn any_keys(alg: &'static str, n: usize) -> Vec<AnyKey> {
    match alg {
        "ES256" | "ES384" | "EdDSA" => (0..n).map(|_| AnyKey::generate(alg)).collect(),
        _ => keys(n)
            .into_iter()
            .map(|key| AnyKey::rsa(key, alg))
            .collect(),
    }
}

pub fn any_configmap(keys: &[&AnyKey]) -> Vec<(String, Vec<u8>)> {
    let jwks = serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let mut files = vec![(
        "jwks.json".to_owned(),
        serde_json::to_vec_pretty(&jwks).unwrap(),
    )];
    for key in keys {
        files.push((
            format!("{}.pem", key.kid),
            key.public_pem.clone().into_bytes(),
        ));
    }
    files
}
