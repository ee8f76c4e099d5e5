//! Docs that cannot rot.
//!
//! - Every `sh` block of `docs/install.md` and of the README runs, in order, in bash against the
//!   project's control plane, from the repository root, with `kubectl` and `helm` of the control
//!   plane on `PATH`. A comment line right above a block says how: `<!-- doc-test: settings -->`
//!   (the block sets `REGISTRY` and `VERSION` for the reader; the test sets them to the images the
//!   test node imports), `<!-- doc-test: node -->` (needs pods: runs only with the test node, as
//!   `tests/pods.rs`; without it the test says so and goes on), `<!-- doc-test: skip: why -->`
//!   (Docker, a registry, or something that would disturb the tests sharing the cluster). Without
//!   the node, the chart's pod cannot run, so after the block that installs the chart the test runs
//!   the operator as a process with the chart's RBAC for the same namespaces, as the pod would.
//! - `docs/reference.md` lists exactly the flags and environment variables of each subcommand
//!   (`--help`), the metrics a running operator exposes (`/metrics`) with their labels, the
//!   condition and event reasons, error labels, written labels and annotations in the code.

mod common;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::Duration,
};

use common::{install_crd, kubeconfig_path, repo_root, wait_for, with_temp_ns};
use jwt_key_operator::controller::{ConditionReason, EventReason};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::DeleteParams};
use serde_json::json;
use support::*;

// ---------------------------------------------------------------------------------------------
// Markdown

/// One fenced block of a Markdown file.
#[derive(Debug, Clone)]
struct Block {
    /// The fence's language (`sh`, `yaml`, ...).
    language: String,
    /// What the `<!-- doc-test: ... -->` line right above it says, if any.
    marker: Option<String>,
    /// The heading it is under.
    section: String,
    /// Line of the opening fence (1-based).
    line: usize,
    text: String,
}

fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(heading) = line.strip_prefix('#').filter(|_| !line.starts_with("#!")) {
            section = heading.trim_start_matches('#').trim().to_string();
        }
        if let Some(language) = line.strip_prefix("```") {
            let marker = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!-- doc-test:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|m| m.trim().to_string());
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push(lines[i]);
                i += 1;
            }
            blocks.push(Block {
                language: language.trim().to_string(),
                marker,
                section: section.clone(),
                line: start + 1,
                text: body.join("\n"),
            });
        }
        i += 1;
    }
    blocks
}

/// The rows of the Markdown tables in the section under `heading` (up to the next heading of the
/// same or a higher level), as cells; the header and separator rows left out.
fn table_rows(text: &str, heading: &str) -> Vec<Vec<String>> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut rows = Vec::new();
    let mut inside = false;
    let mut header_next = false;
    for line in text.lines() {
        if line.starts_with('#') {
            let this = line.chars().take_while(|c| *c == '#').count();
            if line.trim() == heading {
                inside = true;
                continue;
            } else if inside && this <= level {
                break;
            }
        }
        if !inside {
            continue;
        }
        if !line.starts_with('|') {
            header_next = true;
            continue;
        }
        if header_next {
            // The header row; the separator follows.
            header_next = false;
            continue;
        }
        if line.starts_with("| ---") || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        rows.push(cells);
    }
    rows
}

/// The names in backticks in a cell (`--flag`, `NAME`), in order.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn reference() -> String {
    std::fs::read_to_string(repo_root().join("docs/reference.md")).expect("docs/reference.md")
}

/// The first column's names of the tables of a section.
fn first_column(text: &str, heading: &str) -> BTreeSet<String> {
    let rows = table_rows(text, heading);
    assert!(
        !rows.is_empty(),
        "docs/reference.md has no table under {heading}"
    );
    rows.iter().flat_map(|r| code_spans(&r[0])).collect()
}

#[track_caller]
fn assert_same(what: &str, documented: &BTreeSet<String>, actual: &BTreeSet<String>) {
    let missing: Vec<_> = actual.difference(documented).collect();
    let extra: Vec<_> = documented.difference(actual).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/reference.md and the code disagree on {what}:\n  not documented: {missing:?}\n  documented but not in the code: {extra:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reference: flags, environment variables, metrics, reasons, labels

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_jwt-key-operator"))
        .args(args)
        .arg("--help")
        // Set variables would show up as values; the names are what matters.
        .env_clear()
        .output()
        .expect("running jwt-key-operator --help");
    assert!(output.status.success(), "{args:?} --help failed");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// (flags, environment variables) of a subcommand's `--help`, without `--help` and `--version`.
fn options(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || trimmed.starts_with("-") && trimmed.contains(", --") {
            let flag = trimmed
                .split([' ', '=', ',', '<'])
                .find(|w| w.starts_with("--"))
                .expect("a long flag");
            if flag != "--help" && flag != "--version" {
                flags.insert(flag.to_string());
            }
        }
        for part in line.split("[env: ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            vars.insert(name);
        }
    }
    (flags, vars)
}

#[test]
fn reference_lists_every_flag_and_environment_variable_of_each_subcommand() {
    let text = reference();
    for (subcommand, heading) in [("run", "### `run`"), ("serve-jwks", "### `serve-jwks`")] {
        let (flags, vars) = options(&help(&[subcommand]));
        assert!(
            !flags.is_empty(),
            "no flags parsed from {subcommand} --help"
        );
        let rows = table_rows(&text, heading);
        let documented_flags: BTreeSet<String> =
            rows.iter().flat_map(|r| code_spans(&r[0])).collect();
        let documented_vars: BTreeSet<String> =
            rows.iter().flat_map(|r| code_spans(&r[1])).collect();
        assert_same(
            &format!("the flags of {subcommand}"),
            &documented_flags,
            &flags,
        );
        assert_same(
            &format!("the environment variables of {subcommand}"),
            &documented_vars,
            &vars,
        );
    }
    // `crd` takes no options; the top level's are `run`'s.
    let (crd_flags, _) = options(&help(&["crd"]));
    assert!(crd_flags.is_empty(), "crd has options now: {crd_flags:?}");
    let (top, _) = options(&help(&[]));
    let (run, _) = options(&help(&["run"]));
    assert_eq!(top, run, "the top level takes run's options");

    // Variables the code reads itself, besides clap's.
    let documented = first_column(&text, "### Other environment variables");
    let mut read = BTreeSet::new();
    for file in source_files() {
        let source = std::fs::read_to_string(&file).unwrap();
        for part in source.split("std::env::var(\"").skip(1) {
            read.insert(part.split('"').next().unwrap().to_string());
        }
        if source.contains("EnvFilter::try_from_default_env") {
            read.insert("RUST_LOG".to_string());
        }
    }
    assert_same(
        "the environment variables the code reads",
        &documented,
        &read,
    );
}

fn source_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("src"), &mut files);
    files.sort();
    files
}

/// The source without `#[cfg(test)]` modules' noise is not needed: every pattern below only occurs
/// where the operator sets a reason or a name.
fn all_source() -> String {
    source_files()
        .iter()
        .filter(|f| !f.ends_with("tests.rs"))
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every string literal that follows `prefix` (whitespace and newlines between them allowed).
fn literals_after(source: &str, prefix: &str) -> BTreeSet<String> {
    let squeezed: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
    let prefix = prefix.split_whitespace().collect::<Vec<_>>().join(" ");
    squeezed
        .split(&prefix)
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest.split('"').next()?.to_string())
        })
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

#[test]
fn reference_lists_every_reason_error_label_label_and_annotation_in_the_code() {
    let text = reference();
    let source = all_source();

    // The reasons are enums: every value, as Kubernetes shows it.
    let condition: BTreeSet<String> = ConditionReason::ALL
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    let documented = first_column(&text, "## Status and the `Ready` condition");
    assert_same("the Ready condition's reasons", &documented, &condition);

    let events: BTreeSet<String> = EventReason::ALL
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    let documented = first_column(&text, "## Events");
    assert_same("the event reasons", &documented, &events);
    // No reason is written as a string anywhere else.
    for stray in [
        "EventType::Normal,",
        "EventType::Warning,",
        "reason:",
        "not_ready(",
    ] {
        assert!(
            literals_after(&source, stray).is_empty(),
            "a reason written as a string after `{stray}`: {:?} (use ConditionReason or EventReason)",
            literals_after(&source, stray)
        );
    }

    let mod_rs = std::fs::read_to_string(repo_root().join("src/controller/mod.rs")).unwrap();
    let body = mod_rs
        .split("pub fn metric_label")
        .nth(1)
        .expect("Error::metric_label in src/controller/mod.rs")
        .split("\n    }\n")
        .next()
        .unwrap();
    let errors = literals_after(body, "=>");
    let documented = table_rows(&text, "## Metrics")
        .iter()
        .filter(|r| r.len() == 2)
        .flat_map(|r| code_spans(&r[0]))
        .collect();
    assert_same("the error labels", &documented, &errors);

    // Labels, annotations and the finalizer: the constants that hold them.
    let mut names = BTreeSet::new();
    for line in source.lines() {
        if let Some(value) = line
            .trim()
            .strip_prefix("pub const ")
            .filter(|l| l.contains(": &str = \""))
            .and_then(|l| l.split('"').nth(1))
            .filter(|v| v.starts_with("jwtkeys.dev/") || v.starts_with("app.kubernetes.io/"))
        {
            names.insert(value.to_string());
        }
    }
    let documented = first_column(&text, "## Labels, annotations and finalizers");
    assert_same(
        "the labels, annotations and finalizers",
        &documented,
        &names,
    );

    let writes = literals_after(&source, "api_write(");
    let documented_writes: BTreeSet<String> = table_rows(&text, "## Metrics")
        .iter()
        .find(|r| r[0] == "`jwtkeys_api_writes_total`")
        .map(|r| code_spans(&r[3]).into_iter().collect())
        .expect("jwtkeys_api_writes_total in the metrics table");
    assert_same(
        "the resource label of jwtkeys_api_writes_total",
        &documented_writes,
        &writes,
    );
}

/// (metric name as scraped, its type, label names seen) from an OpenMetrics text.
fn scraped_metrics(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            let scraped = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            families.insert(
                name.to_string(),
                (scraped, kind.to_string(), BTreeSet::new()),
            );
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((sample, _)) = line.split_once(' ') else {
            continue;
        };
        let (name, labels) = match sample.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (sample, ""),
        };
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
            .unwrap_or(name);
        if let Some((_, _, names)) = families.get_mut(family) {
            for label in labels.split(',').filter(|l| !l.is_empty()) {
                let label = label.split('=').next().unwrap();
                if label != "le" {
                    names.insert(label.to_string());
                }
            }
        }
    }
    families
        .into_values()
        .map(|(scraped, kind, labels)| (scraped, (kind, labels)))
        .collect()
}

#[tokio::test]
async fn reference_lists_every_metric_with_its_type_and_labels() {
    with_temp_ns("docs-metrics", |ns| async move {
        install_crd(&ns.client).await;
        let operator = operator(&[&ns.name]);
        create_ready(&ns, &jsk("auth", json!({}))).await;
        wait_reconciled(&operator).await;
        let scraped = scraped_metrics(&metrics(&operator).await);
        assert!(
            scraped.contains_key("jwtkeys_published_keys"),
            "no operator metrics scraped: {scraped:?}"
        );
        let rows: Vec<Vec<String>> = table_rows(&reference(), "## Metrics")
            .into_iter()
            .filter(|r| r.len() == 4)
            .collect();
        // Every registered family is documented (a family without samples yet is not scraped:
        // the registry in src/metrics.rs names them all), as scraped: counters with `_total`.
        let registered = literals_after(
            &std::fs::read_to_string(repo_root().join("src/metrics.rs")).unwrap(),
            "registry.register(",
        );
        let documented_families: BTreeSet<String> = rows
            .iter()
            .map(|r| {
                let name = code_spans(&r[0]).remove(0);
                match r[1].as_str() {
                    "counter" => name
                        .strip_suffix("_total")
                        .expect("a counter ends in _total")
                        .into(),
                    _ => name,
                }
            })
            .collect();
        assert_same("the registered metrics", &documented_families, &registered);
        let documented: BTreeSet<String> = rows.iter().flat_map(|r| code_spans(&r[0])).collect();
        let exposed: BTreeSet<String> = scraped
            .keys()
            .filter(|name| name.starts_with("jwtkeys_"))
            .cloned()
            .collect();
        let undocumented: Vec<_> = exposed.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "scraped but not documented: {undocumented:?}"
        );
        assert!(
            exposed.len() >= 5,
            "a running operator with a key exposes most metrics: {exposed:?}"
        );
        for row in &rows {
            let name = &code_spans(&row[0])[0];
            let Some((kind, labels)) = scraped.get(name) else {
                continue;
            };
            assert_eq!(&row[1], kind, "the type of {name}");
            let documented: BTreeSet<String> = code_spans(&row[2]).into_iter().collect();
            // A family without samples yet shows no labels; one with samples shows them all.
            assert!(
                labels.is_empty() || *labels == documented,
                "the labels of {name}: documented {documented:?}, scraped {labels:?}"
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Shell blocks

/// The namespaces and the release the install guide and the README's quick start create.
const GUIDE_NAMESPACES: [&str; 3] = ["auth", "api", "jwt-key-operator"];
const RELEASE: &str = "jwt-key-operator";
const CRD: &str = "jwtsigningkeys.jwtkeys.dev";

/// Runs one block in bash with the guide's settings; panics with its output when it fails.
fn run_block(doc: &str, block: &Block) {
    let bin = repo_root().join("target/control-plane/bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}\n", block.text);
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repo_root())
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        // The images the test node imports (tests/control-plane/node images).
        .env("REGISTRY", "localhost")
        .env("VERSION", "dev")
        .output()
        .expect("running bash");
    assert!(
        output.status.success(),
        "{doc}:{} ({}) failed ({}):\n{}\n--- stdout\n{}--- stderr\n{}",
        block.line,
        block.section,
        output.status,
        block.text,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{doc}:{} ({}) ran", block.line, block.section);
}

/// Removes what a guide creates: its keys while an operator still runs (a key with copies waits
/// for the operator's finalizer), the release, then the namespaces.
async fn clean_up(client: &Client, operator: &mut Option<common::OperatorProcess>) {
    for namespace in ["auth", "api"] {
        let keys: Api<jwt_key_operator::crd::JwtSigningKey> =
            Api::namespaced(client.clone(), namespace);
        if let Ok(list) = keys.list(&Default::default()).await {
            for key in list {
                let name = key.metadata.name.unwrap_or_default();
                let _ = keys.delete(&name, &DeleteParams::default()).await;
            }
            wait_for("the guide's keys to be deleted", REACT, || async {
                keys.list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            })
            .await;
        }
    }
    let _ = common::helm()
        .args([
            "uninstall",
            RELEASE,
            "--namespace",
            "jwt-key-operator",
            "--wait",
        ])
        .output();
    *operator = None;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in GUIDE_NAMESPACES {
        let _ = namespaces.delete(name, &DeleteParams::default()).await;
    }
    wait_for(
        "the guide's namespaces to be gone",
        Duration::from_secs(120),
        || async {
            for name in GUIDE_NAMESPACES {
                if namespaces.get_opt(name).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Lets the guide's `helm install` take over the CRD that the tests applied (Helm adopts an object
/// that carries its release's labels and annotations); the chart keeps it on uninstall.
fn adopt_crd_for_the_release() {
    for args in [
        vec![
            "label",
            "crd",
            CRD,
            "app.kubernetes.io/managed-by=Helm",
            "--overwrite",
        ],
        vec![
            "annotate",
            "crd",
            CRD,
            "meta.helm.sh/release-name=jwt-key-operator",
            "meta.helm.sh/release-namespace=jwt-key-operator",
            "--overwrite",
        ],
    ] {
        let output = common::kubectl().args(&args).output().expect("kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs the `sh` blocks of `doc` in order (see the module comment).
async fn run_guide(client: &Client, doc: &str, node: &Option<String>) {
    let blocks: Vec<Block> = blocks(&repo_root().join(doc))
        .into_iter()
        .filter(|b| b.language == "sh")
        .collect();
    assert!(!blocks.is_empty(), "{doc} has no sh blocks");
    let mut operator = None;
    clean_up(client, &mut operator).await;
    adopt_crd_for_the_release();
    for block in &blocks {
        match block.marker.as_deref() {
            Some("settings") => {
                let set: BTreeSet<&str> = block
                    .text
                    .lines()
                    .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
                    .collect();
                assert_eq!(
                    set,
                    BTreeSet::from(["REGISTRY", "VERSION"]),
                    "{doc}:{}: a settings block sets REGISTRY and VERSION, which the test sets itself",
                    block.line
                );
                continue;
            }
            Some("node") => {
                if let Some(reason) = node {
                    eprintln!(
                        "{doc}:{} ({}) skipped: it needs pods and {reason}",
                        block.line, block.section
                    );
                    continue;
                }
            }
            Some(skip) if skip.starts_with("skip:") => {
                eprintln!(
                    "{doc}:{} ({}) not run: {}",
                    block.line,
                    block.section,
                    skip.trim_start_matches("skip:").trim()
                );
                continue;
            }
            Some(other) => panic!("{doc}:{}: unknown doc-test marker {other:?}", block.line),
            None => {}
        }
        run_block(doc, block);
        if block.text.contains("helm install") && node.is_some() {
            // No pod can run without the node: the operator runs as the chart's pod would, with
            // the RBAC the chart renders for the same namespaces.
            eprintln!("{doc}: no node; the operator runs as a process for auth and api");
            operator = Some(common::OperatorProcess::start(&["auth", "api"], &[]));
        }
    }
    clean_up(client, &mut operator).await;
}

#[tokio::test]
async fn readme_and_install_guide_shell_blocks_run_on_the_control_plane() {
    let client = common::client().await;
    install_crd(&client).await;
    let node = common::missing_node(&client).await;
    if let Some(reason) = &node {
        eprintln!("the blocks that need pods are skipped: {reason}");
    }
    run_guide(&client, "README.md", &node).await;
    run_guide(&client, "docs/install.md", &node).await;
}

/// The anchors of a Markdown file's headings, as GitHub makes them (lowercase; letters, digits,
/// `-` and `_` kept; spaces become `-`).
fn anchors(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut fenced = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            let slug: String = line
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            anchors.insert(slug);
        }
    }
    anchors
}

#[test]
fn every_shell_block_marker_is_known_and_every_link_to_a_doc_resolves() {
    let root = repo_root();
    let mut docs = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        docs.push(entry.unwrap().path());
    }
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for block in blocks(doc) {
            if let Some(marker) = &block.marker {
                assert!(
                    marker == "settings" || marker == "node" || marker.starts_with("skip: "),
                    "{}:{}: unknown doc-test marker {marker:?}",
                    doc.display(),
                    block.line
                );
            }
        }
        // Relative links to files of the repository, and their anchors.
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap();
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            assert!(
                resolved.exists(),
                "{} links to {target}, which does not exist",
                doc.display()
            );
            if !anchor.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                assert!(
                    anchors(&resolved).contains(anchor),
                    "{} links to {target}, but {} has no heading with that anchor",
                    doc.display(),
                    resolved.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Argo CD health check of docs/gitops.md

/// A JSON value as a Lua table constructor (arrays 1-based, as `ipairs` walks them).
fn lua_literal(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The health check's Lua, as `docs/gitops.md` gives it.
fn argo_health_lua() -> String {
    let block = blocks(&repo_root().join("docs/gitops.md"))
        .into_iter()
        .find(|b| {
            b.text
                .contains("resource.customizations.health.jwtkeys.dev_JwtSigningKey")
        })
        .expect("the health check in docs/gitops.md");
    block
        .text
        .lines()
        .skip_while(|l| !l.contains("resource.customizations.health"))
        .skip(1)
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (status, message) the health check gives for `object`; `None` without `lua5.4`.
fn argo_health(object: &serde_json::Value) -> Option<(String, String)> {
    let script = format!(
        "local function check(obj)\n{}\nend\nlocal hs = check({})\nio.write(hs.status, \"\\n\", hs.message)\n",
        argo_health_lua(),
        lua_literal(object)
    );
    let output = match Command::new("lua5.4").arg("-").stdin_piped_write(&script) {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running lua5.4: {e}"),
    };
    assert!(
        output.status.success(),
        "the health check failed:\n{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (status, message) = text.split_once('\n').expect("status and message");
    Some((status.to_string(), message.to_string()))
}

/// Runs a command with `input` on its standard input.
trait StdinWrite {
    fn stdin_piped_write(&mut self, input: &str) -> std::io::Result<std::process::Output>;
}

impl StdinWrite for Command {
    fn stdin_piped_write(&mut self, input: &str) -> std::io::Result<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
        child.wait_with_output()
    }
}

#[tokio::test]
async fn the_argo_cd_health_check_follows_the_ready_condition_of_real_keys() {
    if Command::new("lua5.4").arg("-v").output().is_err() {
        eprintln!("skipped: no lua5.4 to run the Argo CD health check (apt-get install lua5.4)");
        return;
    }
    with_temp_ns("docs-argo", |ns| async move {
        install_crd(&ns.client).await;
        let fresh = serde_json::to_value(jsk("fresh", json!({}))).unwrap();
        let (status, _) = argo_health(&fresh).unwrap();
        assert_eq!(status, "Progressing", "a key without a status");

        let _operator = operator(&[&ns.name]);
        create_ready(&ns, &jsk("auth", json!({}))).await;
        let ready = serde_json::to_value(api(&ns).get("auth").await.unwrap()).unwrap();
        let (status, message) = argo_health(&ready).unwrap();
        assert_eq!(status, "Healthy", "{message}");
        assert!(message.starts_with("KeysReady: "), "{message}");

        // A spec the schema admits and the operator refuses.
        let selector = json!({"namespaceSelector": {"matchExpressions": [{"key": "jwks", "operator": "Near"}]}});
        create(&ns, &jsk("bad", json!({"publish": selector}))).await;
        let bad = wait_ready(&ns, "bad", "False", "InvalidSpec").await;
        let (status, message) = argo_health(&serde_json::to_value(bad).unwrap()).unwrap();
        assert_eq!(status, "Degraded", "{message}");

        // A spec change the operator has not handled yet is not healthy.
        let mut stale = ready.clone();
        stale["metadata"]["generation"] = json!(2);
        let (status, _) = argo_health(&stale).unwrap();
        assert_eq!(status, "Progressing", "a status of an older generation");
    })
    .await;
}
