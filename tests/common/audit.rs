//! The test control plane's audit log (`tests/control-plane/up`): every request a ServiceAccount made,
//! as the API server saw it. Tests and benches count an operator's requests here instead of trusting
//! its own counters: `AuditLog::open()?.requests(&operator.username(), from, to)`.
//!
//! The log is JSON lines at level Metadata without the RequestReceived stage: one `ResponseComplete`
//! event per request, and a `ResponseStarted` before it for watches. [`AuditLog::requests`] gives one
//! [`Request`] per `auditID`. The API server writes an event once it has answered: wait a moment
//! after the window closes before reading it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

/// What a request did, by verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// get, list.
    Read,
    /// watch.
    Watch,
    /// create, update, patch, delete, deletecollection.
    Write,
    /// Anything else (non-resource requests, ...).
    Other,
}

/// One request, from its audit events.
#[derive(Clone, Debug)]
pub struct Request {
    pub audit_id: String,
    pub username: String,
    pub verb: String,
    /// `objectRef.resource` (plural, e.g. `secrets`); empty for non-resource requests.
    pub resource: String,
    /// `objectRef.subresource` (e.g. `status`); empty when none.
    pub subresource: String,
    pub namespace: String,
    /// Empty for lists, watches and creates with `generateName`.
    pub name: String,
    /// When the API server received it (`requestReceivedTimestamp`).
    pub received: SystemTime,
    /// When its last recorded stage happened (`stageTimestamp`).
    pub completed: SystemTime,
    /// `responseStatus.code` of its last recorded stage.
    pub code: Option<u16>,
    /// Path and query (`/api/v1/namespaces/a/secrets?watch=true&timeoutSeconds=412...`).
    pub request_uri: String,
}

impl Request {
    pub fn kind(&self) -> RequestKind {
        match self.verb.as_str() {
            "get" | "list" => RequestKind::Read,
            "watch" => RequestKind::Watch,
            "create" | "update" | "patch" | "delete" | "deletecollection" => RequestKind::Write,
            _ => RequestKind::Other,
        }
    }

    /// `resource` or `resource/subresource`.
    pub fn target(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Requests counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub reads: usize,
    pub watches: usize,
    pub writes: usize,
    pub other: usize,
}

impl Counts {
    pub fn of<'a>(requests: impl IntoIterator<Item = &'a Request>) -> Counts {
        let mut counts = Counts::default();
        for request in requests {
            match request.kind() {
                RequestKind::Read => counts.reads += 1,
                RequestKind::Watch => counts.watches += 1,
                RequestKind::Write => counts.writes += 1,
                RequestKind::Other => counts.other += 1,
            }
        }
        counts
    }

    pub fn total(&self) -> usize {
        self.reads + self.watches + self.writes + self.other
    }
}

/// `verb target` → count, for printing what requests were made.
pub fn breakdown<'a>(requests: impl IntoIterator<Item = &'a Request>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts
            .entry(format!("{} {}", request.verb, request.target()))
            .or_insert(0) += 1;
    }
    counts
}

/// The audit log of the test control plane: `audit.log` next to the kubeconfig that
/// `tests/control-plane/up` wrote, and its rotated backups.
pub struct AuditLog {
    path: PathBuf,
}

/// The audit log path of the control plane the tests use, when it keeps one (a cluster named by
/// `KUBECONFIG` that is not ours has none).
pub fn audit_log_path() -> Option<PathBuf> {
    let path = super::kubeconfig_path().parent()?.join("audit.log");
    path.exists().then_some(path)
}

impl AuditLog {
    /// The test control plane's audit log, if it keeps one.
    pub fn open() -> Option<AuditLog> {
        audit_log_path().map(AuditLog::at)
    }

    /// The audit log at `path` (backups are `<stem>-<time>.<ext>` beside it).
    pub fn at(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The requests `username` made that the API server received in `[from, to)`, one per `auditID`,
    /// oldest first.
    pub fn requests(&self, username: &str, from: SystemTime, to: SystemTime) -> Vec<Request> {
        let needle = format!("\"username\":{}", Value::from(username));
        let mut by_id: BTreeMap<String, Request> = BTreeMap::new();
        for file in self.files() {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for line in text.lines().filter(|l| l.contains(&needle)) {
                let Some(request) = parse(line) else { continue };
                if request.username != username || request.received < from || request.received >= to
                {
                    continue;
                }
                match by_id.get_mut(&request.audit_id) {
                    // A later stage of the same request: keep its outcome.
                    Some(seen) if request.completed >= seen.completed => {
                        seen.completed = request.completed;
                        seen.code = request.code.or(seen.code);
                    }
                    Some(_) => {}
                    None => {
                        by_id.insert(request.audit_id.clone(), request);
                    }
                }
            }
        }
        let mut requests: Vec<Request> = by_id.into_values().collect();
        requests.sort_by_key(|r| r.received);
        requests
    }

    /// The log and its rotated backups.
    fn files(&self) -> Vec<PathBuf> {
        let (Some(dir), Some(stem)) = (
            self.path.parent(),
            self.path.file_stem().and_then(|s| s.to_str()),
        ) else {
            return vec![self.path.clone()];
        };
        let extension = self.path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        name.starts_with(&format!("{stem}-"))
                            && name.ends_with(&format!(".{extension}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.push(self.path.clone());
        files
    }
}

fn parse(line: &str) -> Option<Request> {
    let event: Value = serde_json::from_str(line).ok()?;
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    let object = &event["objectRef"];
    Some(Request {
        audit_id: text(&event["auditID"]),
        username: text(&event["user"]["username"]),
        verb: text(&event["verb"]),
        resource: text(&object["resource"]),
        subresource: text(&object["subresource"]),
        namespace: text(&object["namespace"]),
        name: text(&object["name"]),
        received: timestamp(event["requestReceivedTimestamp"].as_str()?)?,
        completed: timestamp(event["stageTimestamp"].as_str()?)?,
        code: event["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok()),
        request_uri: text(&event["requestURI"]),
    })
}

/// An RFC 3339 timestamp as the API server writes them (`2026-11-29T04:16:10.275765Z`).
fn timestamp(text: &str) -> Option<SystemTime> {
    let at: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    let micros = u64::try_from(at.as_microsecond()).ok()?;
    Some(UNIX_EPOCH + Duration::from_micros(micros))
}
