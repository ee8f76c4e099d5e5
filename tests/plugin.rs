//! The `kubectl jwtkeys` plugin (crates/kubectl-jwtkeys) as users run it: the built binary, with a
//! kubeconfig whose contexts impersonate a user bound to the built-in `view` or `edit` ClusterRole
//! (extended with the chart's aggregated JwtSigningKey rules), against keys that an operator
//! started as in the other end-to-end tests manages on the real API server.

mod common;
mod support;

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use common::{TestNamespace, install_crd, wait_for, with_temp_ns};
use jsonwebtoken::{EncodingKey, Header, encode};
use jwt_key_operator::resources;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::{Api, ResourceExt, api::PostParams};
use serde_json::{Value, json};

/// The plugin binary, built once per test process with the cargo that runs the tests (it belongs
/// to another package of the workspace, so Cargo does not hand its path to these tests).
fn plugin_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let output = Command::new(cargo)
                .current_dir(common::repo_root())
                .args([
                    "build",
                    "-p",
                    "kubectl-jwtkeys",
                    "--bin",
                    "kubectl-jwtkeys",
                    "--message-format=json-render-diagnostics",
                ])
                .stderr(Stdio::inherit())
                .output()
                .expect("running cargo build -p kubectl-jwtkeys");
            assert!(
                output.status.success(),
                "cargo build -p kubectl-jwtkeys failed"
            );
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo reported the kubectl-jwtkeys executable")
        })
        .clone()
}

/// The result of one plugin run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "the plugin failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn fails_with(self, code: i32, needles: &[&str]) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.stderr
            );
        }
        // A message for a user, not a crash.
        for crash in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(!self.stderr.contains(crash), "{}", self.stderr);
        }
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("-o json is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A kubeconfig with the admin's cluster and three contexts: `admin` (current), and `viewer` and
/// `editor`, which impersonate those users (members of `system:authenticated`).
struct Users {
    file: tempfile::NamedTempFile,
}

impl Users {
    fn new(viewer: &str, editor: &str) -> Users {
        let admin =
            std::fs::read_to_string(common::kubeconfig_path()).expect("the admin kubeconfig");
        let admin: Value = serde_saphyr::from_str(&admin).expect("a YAML kubeconfig");
        let cluster = admin["clusters"][0].clone();
        let credentials = admin["users"][0]["user"].clone();
        let mut users = vec![json!({"name": "admin", "user": credentials})];
        let mut contexts = vec![json!({"name": "admin",
            "context": {"cluster": cluster["name"], "user": "admin"}})];
        for (name, user) in [("viewer", viewer), ("editor", editor)] {
            let mut impersonating = credentials.clone();
            impersonating["as"] = json!(user);
            impersonating["as-groups"] = json!(["system:authenticated"]);
            users.push(json!({"name": name, "user": impersonating}));
            contexts
                .push(json!({"name": name, "context": {"cluster": cluster["name"], "user": name}}));
        }
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "admin",
            "clusters": [cluster], "users": users, "contexts": contexts,
        });
        let mut file = tempfile::NamedTempFile::new().expect("a temp kubeconfig");
        // JSON is YAML.
        file.write_all(kubeconfig.to_string().as_bytes()).unwrap();
        Users { file }
    }

    /// Runs the plugin as `context` (through `KUBECONFIG` and `--context`), with `stdin`.
    fn run(&self, context: &str, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command = Command::new(plugin_binary());
        command
            .args(args)
            .args(["--context", context])
            .env("KUBECONFIG", self.file.path())
            .env_remove("RUST_BACKTRACE")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting kubectl-jwtkeys");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let output = child.wait_with_output().expect("running kubectl-jwtkeys");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The chart's user roles (templates/rbac-aggregate.yaml), rendered and applied by the admin under a
/// unique release name; deleted when dropped, so that the built-in roles lose the rules again.
struct AggregatedRoles {
    names: Vec<String>,
}

impl AggregatedRoles {
    fn apply() -> AggregatedRoles {
        let release = format!("jko-plugin-{}", common::random_suffix(6));
        let chart = common::repo_root().join("charts/jwt-key-operator");
        let output = common::helm()
            .args(["template", &release])
            .arg(&chart)
            .args(["--show-only", "templates/rbac-aggregate.yaml"])
            .args(["--kube-version", &common::kube_version()])
            .output()
            .expect("running helm template");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut apply = common::kubectl()
            .args(["apply", "-f", "-", "-o", "name"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running kubectl apply");
        apply
            .stdin
            .take()
            .unwrap()
            .write_all(&output.stdout)
            .unwrap();
        let applied = apply.wait_with_output().unwrap();
        assert!(applied.status.success(), "kubectl apply of the user roles");
        let names: Vec<String> = String::from_utf8_lossy(&applied.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(names.len(), 2, "the view and edit ClusterRoles: {names:?}");
        AggregatedRoles { names }
    }
}

impl Drop for AggregatedRoles {
    fn drop(&mut self) {
        let _ = common::kubectl()
            .arg("delete")
            .args(&self.names)
            .arg("--ignore-not-found")
            .status();
    }
}

/// Binds `user` to the built-in ClusterRole `role` in `namespace`.
async fn bind(ns: &TestNamespace, namespace: &str, user: &str, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(ns.client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|err| panic!("binding {user} to {role}: {err}"));
}

/// A token signed with the Secret's signing key, valid for ten minutes.
async fn signed_token(ns: &TestNamespace) -> (String, String) {
    let secret = support::secret_text(&ns.client, &ns.name, "auth-signing-key")
        .await
        .expect("the Secret");
    let now = jiff::Timestamp::now().as_second();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(secret[resources::KID].clone());
    let token = encode(
        &header,
        &json!({"sub": "alice", "iat": now, "exp": now + 600}),
        &EncodingKey::from_rsa_pem(secret[resources::PRIVATE_PEM].as_bytes()).unwrap(),
    )
    .unwrap();
    (token, secret[resources::KID].clone())
}

/// Lines of base64 in the Secret's private keys: none may appear in any output.
async fn private_key_lines(ns: &TestNamespace) -> Vec<String> {
    let secret = support::secret_text(&ns.client, &ns.name, "auth-signing-key")
        .await
        .expect("the Secret");
    [
        resources::PRIVATE_PEM,
        resources::NEXT_PRIVATE_PEM,
        resources::PENDING_PRIVATE_PEM,
    ]
    .iter()
    .filter_map(|entry| secret.get(*entry))
    .flat_map(|pem| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_string)
    })
    .collect()
}

fn assert_no_private_material(run: &Run, lines: &[String]) {
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("PRIVATE KEY"), "{all}");
    for line in lines {
        assert!(
            !all.contains(line.as_str()),
            "private key material in:\n{all}"
        );
    }
}

#[tokio::test]
async fn viewers_read_status_and_verify_tokens_editors_rotate_revoke_and_inspect_secrets() {
    with_temp_ns("plugin", |ns| async move {
        install_crd(&ns.client).await;
        let copy = ns.extra("copy", &[("jwks", "auth")]).await;
        support::accept_from(&ns.client, &copy, Some(&format!("{}/auth", ns.name))).await;
        let viewer = format!("viewer-{}", ns.name);
        let editor = format!("editor-{}", ns.name);
        for namespace in [&ns.name, &copy] {
            bind(&ns, namespace, &viewer, "view").await;
            bind(&ns, namespace, &editor, "edit").await;
        }
        let users = Users::new(&viewer, &editor);
        let _roles = AggregatedRoles::apply();
        let mut operator = support::operator(&[&ns.name, &copy]);
        let key = support::jsk(
            "auth",
            support::publish_to_copies(
                json!({"rotationInterval": "1h", "propagationDelay": "20s"}),
            ),
        );
        let first = support::create_ready(&ns, &key).await;
        let n = ["-n", ns.name.as_str()];

        // kube-controller-manager aggregates the chart's rules into `view` and `edit` shortly after.
        wait_for(
            "the viewer to read JwtSigningKeys",
            Duration::from_secs(30),
            || async {
                let run = users.run(
                    "viewer",
                    &[&n[..], &["status", "auth", "-o", "json"]].concat(),
                    None,
                );
                (run.code == 0).then_some(())
            },
        )
        .await;
        wait_for(
            "the copy to hold the signing key",
            support::REACT,
            || async {
                let data = support::config_map_data(&ns.client, &copy, "auth-jwks").await?;
                support::jwks_kids(&data).contains(&first).then_some(())
            },
        )
        .await;

        // status, as a viewer: the table and the JSON form.
        let table = users
            .run("viewer", &[&n[..], &["status", "auth"]].concat(), None)
            .ok();
        for needle in [
            &first,
            "Active",
            "KeysReady",
            "home",
            "copy",
            copy.as_str(),
            "KeyCreated",
        ] {
            assert!(
                table.stdout.contains(needle),
                "{needle:?} in:\n{}",
                table.stdout
            );
        }
        let report = users
            .run(
                "viewer",
                &[&n[..], &["status", "-o", "json"]].concat(),
                None,
            )
            .ok()
            .json();
        let report = &report[0];
        assert_eq!(report["activeKeyId"], json!(first));
        assert_eq!(report["ready"]["status"], "True");
        assert_eq!(report["keys"][0]["state"], "Active");
        let holders = report["publishedIn"].as_array().unwrap();
        let places: Vec<(&str, bool)> = holders
            .iter()
            .map(|h| {
                (
                    h["namespace"].as_str().unwrap(),
                    h["home"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(places, [(ns.name.as_str(), true), (copy.as_str(), false)]);
        for holder in holders {
            assert_eq!(holder["kids"], json!([first]), "{holder}");
        }
        let yaml = users
            .run(
                "viewer",
                &[&n[..], &["status", "auth", "-o", "yaml"]].concat(),
                None,
            )
            .ok();
        assert!(
            yaml.stdout.contains(&format!("activeKeyId: {first}")),
            "{}",
            yaml.stdout
        );

        // The view role reads no Secrets and changes nothing; the errors say which right is missing.
        users
            .run(
                "viewer",
                &[&n[..], &["inspect", "secret", "auth-signing-key"]].concat(),
                None,
            )
            .fails_with(
                1,
                &[
                    &format!("cannot get Secret {}/auth-signing-key: forbidden", ns.name),
                    "`get` on `secrets`",
                    "`view` role does not grant reading Secrets",
                ],
            );
        users
            .run("viewer", &[&n[..], &["rotate", "auth"]].concat(), None)
            .fails_with(
                1,
                &[
                    &format!("cannot patch JwtSigningKey {}/auth: forbidden", ns.name),
                    "`patch` on `jwtsigningkeys.jwtkeys.dev`",
                ],
            );
        users.run("viewer", &["status", "-A"], None).fails_with(
            1,
            &["cannot list JwtSigningKeys in all namespaces: forbidden"],
        );
        users
            .run("viewer", &[&n[..], &["status", "nope"]].concat(), None)
            .fails_with(1, &[&format!("JwtSigningKey {}/nope not found", ns.name)]);

        // inspect, as an editor: kid, algorithm, size and state; never the private key.
        let private = private_key_lines(&ns).await;
        let secret = users
            .run(
                "editor",
                &[&n[..], &["inspect", "secret", "auth-signing-key"]].concat(),
                None,
            )
            .ok();
        for needle in [
            first.as_str(),
            "RS256",
            "2048",
            "Active",
            "signing key (private.pem)",
        ] {
            assert!(
                secret.stdout.contains(needle),
                "{needle:?} in:\n{}",
                secret.stdout
            );
        }
        assert_no_private_material(&secret, &private);
        eprintln!("kubectl jwtkeys inspect secret:\n{}", secret.stdout);
        let as_json = users
            .run(
                "editor",
                &[
                    &n[..],
                    &["inspect", "secret", "auth-signing-key", "-o", "json"],
                ]
                .concat(),
                None,
            )
            .ok();
        assert_no_private_material(&as_json, &private);
        let inspected = as_json.json();
        assert_eq!(inspected["keys"][0]["kid"], json!(first));
        assert_eq!(inspected["keys"][0]["bits"], 2048);
        assert_eq!(inspected["keys"][0]["problems"], Value::Null);
        let config_map = users
            .run(
                "viewer",
                &[
                    "-n",
                    &copy,
                    "inspect",
                    "configmap",
                    "auth-jwks",
                    "-o",
                    "json",
                ],
                None,
            )
            .ok()
            .json();
        assert_eq!(config_map["signingKey"], json!(format!("{}/auth", ns.name)));
        assert_eq!(config_map["keys"][0]["kid"], json!(first));
        assert_eq!(config_map["keys"][0]["state"], "Active");

        // verify, as a viewer: the token from --token and from stdin.
        let (token, kid) = signed_token(&ns).await;
        assert_eq!(kid, first);
        let verified = users
            .run(
                "viewer",
                &[&n[..], &["verify", "--token", &token]].concat(),
                None,
            )
            .ok();
        assert!(
            verified.stdout.contains(&format!("Signed by kid {first}")),
            "{}",
            verified.stdout
        );
        assert!(verified.stdout.contains("Active"), "{}", verified.stdout);
        eprintln!("kubectl jwtkeys verify:\n{}", verified.stdout);
        users
            .run("viewer", &["verify", "-A", "-o", "json"], Some(&token))
            .fails_with(1, &["cannot list JwtSigningKeys in all namespaces"]);
        let verified = users
            .run(
                "viewer",
                &[&n[..], &["verify", "-o", "json"]].concat(),
                Some(&format!("{token}\n")),
            )
            .ok()
            .json();
        assert_eq!(verified["verifiesEverywhere"], true);
        assert_eq!(verified["state"], "Active");
        assert_eq!(verified["configMaps"].as_array().unwrap().len(), 2);
        assert!(verified["keyRemovedAfter"].is_string(), "{verified}");
        users
            .run("viewer", &["verify", "--token", "not-a-jwt"], None)
            .fails_with(1, &["the token does not parse as a JWT"]);
        let mut tampered = token.clone();
        tampered.truncate(token.len() - 4);
        tampered.push_str("AAAA");
        users
            .run(
                "viewer",
                &[&n[..], &["verify", "--token", &tampered]].concat(),
                None,
            )
            .fails_with(3, &[]);

        // rotate, as an editor: returns once every ConfigMap holds the new key.
        let rotated = users
            .run("editor", &[&n[..], &["rotate", "auth"]].concat(), None)
            .ok();
        assert!(rotated.stdout.contains("new key"), "{}", rotated.stdout);
        let status = support::api(&ns).get("auth").await.unwrap().status.unwrap();
        let next = status
            .keys
            .iter()
            .find(|k| k.kid != first)
            .expect("a new key in the status")
            .kid
            .clone();
        assert!(rotated.stdout.contains(&next), "{}", rotated.stdout);
        for namespace in [&ns.name, &copy] {
            let data = support::config_map_data(&ns.client, namespace, "auth-jwks")
                .await
                .unwrap();
            assert!(support::jwks_kids(&data).contains(&next), "{namespace}");
        }

        // revoke: asks first (no terminal here: refused, nothing changes), then with --yes waits
        // until no ConfigMap holds the kid.
        users
            .run(
                "editor",
                &[&n[..], &["revoke", "auth", &next]].concat(),
                None,
            )
            .fails_with(1, &["pass --yes"]);
        let unchanged = support::api(&ns).get("auth").await.unwrap();
        assert!(
            !unchanged
                .annotations()
                .contains_key(jwt_key_operator::crd::REVOKE_ANNOTATION)
        );
        users
            .run(
                "editor",
                &[&n[..], &["revoke", "auth", "not-a-kid", "--yes"]].concat(),
                None,
            )
            .fails_with(1, &["kid not-a-kid is not a published key"]);
        let revoked = users
            .run(
                "editor",
                &[&n[..], &["revoke", "auth", &next, "--yes"]].concat(),
                None,
            )
            .ok();
        assert!(
            revoked.stdout.contains(&format!("revoked {next}")),
            "{}",
            revoked.stdout
        );
        for namespace in [&ns.name, &copy] {
            let data = support::config_map_data(&ns.client, namespace, "auth-jwks")
                .await
                .unwrap();
            assert!(!support::jwks_kids(&data).contains(&next), "{namespace}");
        }

        // A wait that runs out names what is pending.
        operator.kill();
        users
            .run(
                "editor",
                &[&n[..], &["rotate", "auth", "--timeout", "2s"]].concat(),
                None,
            )
            .fails_with(
                2,
                &["timed out after 2s", "has not handled jwtkeys.dev/rotate"],
            );
    })
    .await;
}
