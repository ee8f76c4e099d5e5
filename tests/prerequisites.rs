//! scripts/prerequisites and its callers: on a machine that lacks something, `scripts/demo --node`
//! and `JKO_NODE=1 scripts/test` stop before the first build with the command that fixes it, instead
//! of failing after it. Nothing is installed here: the runs use `--check`, or a non-root user without
//! a terminal (who is only told the command). A missing package is simulated by pointing the CNI
//! check at an empty folder (`JKO_CNI_DIR`).

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_missing_node_package_is_reported_with_the_apt_get_line() {
    let output = Command::new(repo().join("scripts/prerequisites"))
        .args(["--node", "--check"])
        .env("JKO_CNI_DIR", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/prerequisites");
    let reported = text(&output);
    assert_eq!(output.status.code(), Some(1), "{reported}");
    assert!(
        reported.contains("apt-get install") && reported.contains("containernetworking-plugins"),
        "{reported}"
    );
    // Without --node the node's packages are not asked for.
    let output = Command::new(repo().join("scripts/prerequisites"))
        .arg("--check")
        .env("JKO_CNI_DIR", "/nonexistent")
        .output()
        .expect("running scripts/prerequisites");
    let text = text(&output);
    assert!(!text.contains("containernetworking-plugins"), "{text}");
}

/// Runs `command` as user nobody (no terminal), where `setpriv` exists and this runs as root.
fn as_nobody(command: &str, env: &[(&str, &str)]) -> Option<Output> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        eprintln!("not root: the non-root run is what this user gets anyway; skipped");
        return None;
    }
    let mut run = Command::new("setpriv");
    run.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "bash",
        "-c",
        command,
    ])
    .current_dir(repo())
    // nobody cannot write a home folder; nothing here needs one.
    .env("HOME", "/nonexistent")
    .stdin(Stdio::null());
    for (key, value) in env {
        run.env(key, value);
    }
    Some(run.output().expect("running setpriv"))
}

#[test]
fn demo_and_test_with_the_node_stop_before_any_build_and_name_the_fix() {
    for (command, env) in [
        ("scripts/demo --node", vec![("JKO_CNI_DIR", "/nonexistent")]),
        (
            "scripts/test",
            vec![("JKO_CNI_DIR", "/nonexistent"), ("JKO_NODE", "1")],
        ),
    ] {
        let Some(output) = as_nobody(command, &env) else {
            return;
        };
        let text = text(&output);
        assert!(!output.status.success(), "{command}: {text}");
        assert!(
            text.contains("sudo apt-get install") && text.contains("containernetworking-plugins"),
            "{command}: {text}"
        );
        assert!(text.contains("the node needs root"), "{command}: {text}");
        // Nothing was started or built.
        for later in [
            "Starting the control plane",
            "control-plane build",
            "Compiling",
        ] {
            assert!(!text.contains(later), "{command} went on: {text}");
        }
    }
}
