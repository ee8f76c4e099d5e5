//! Errors as a user reads them: the object, what was attempted and, for a refusal, the RBAC right
//! that is missing. Never a backtrace, never key material.

use std::fmt;

/// What the plugin tried, for error messages: `get` on `secrets` `auth-signing-key` in `auth`.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// RBAC verb: get, list, patch.
    pub verb: &'static str,
    /// Resource, qualified by its group when it has one (`jwtsigningkeys.jwtkeys.dev`).
    pub resource: &'static str,
    /// Namespace; `None` for all namespaces.
    pub namespace: Option<String>,
    /// Object name; `None` for a list.
    pub name: Option<String>,
}

impl Attempt {
    /// `verb` on one object.
    pub fn one(verb: &'static str, resource: &'static str, namespace: &str, name: &str) -> Self {
        Attempt {
            verb,
            resource,
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
        }
    }

    /// `list` in a namespace, or in all of them.
    pub fn list(resource: &'static str, namespace: Option<&str>) -> Self {
        Attempt {
            verb: "list",
            resource,
            namespace: namespace.map(str::to_string),
            name: None,
        }
    }

    fn object(&self) -> String {
        let kind = kind_of(self.resource);
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) => format!("{kind} {name}"),
            (Some(ns), None) => format!("{kind}s in namespace {ns}"),
            (None, None) => format!("{kind}s in all namespaces"),
        }
    }

    fn scope(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide (a ClusterRoleBinding)".to_string(),
        }
    }
}

/// The kind a resource name stands for, for messages.
fn kind_of(resource: &str) -> &'static str {
    match resource {
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "events" => "Event",
        _ => "JwtSigningKey",
    }
}

/// Every failure the plugin reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be loaded.
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server refused a request for lack of rights.
    #[error("{}", forbidden_message(.attempt, .hint))]
    Forbidden {
        /// What was refused.
        attempt: Attempt,
        /// Why a common role lacks the right, when we know.
        hint: Option<&'static str>,
    },
    /// The object does not exist.
    #[error("{} not found", .0.object())]
    NotFound(Attempt),
    /// Anything else the API server or the connection answered.
    #[error("cannot {} {}: {message}", .attempt.verb, .attempt.object())]
    Api {
        /// What failed.
        attempt: Attempt,
        /// The server's message or the connection error.
        message: String,
    },
    /// Bad input or an object that does not hold what the operator writes.
    #[error("{0}")]
    Invalid(String),
    /// A `--wait` that ran out.
    #[error("{0}")]
    Timeout(String),
}

fn forbidden_message(attempt: &Attempt, hint: &Option<&'static str>) -> String {
    let mut message = format!(
        "cannot {} {}: forbidden; you need the RBAC right `{}` on `{}` {}",
        attempt.verb,
        attempt.object(),
        attempt.verb,
        attempt.resource,
        attempt.scope()
    );
    if let Some(hint) = hint {
        message.push_str(" (");
        message.push_str(hint);
        message.push(')');
    }
    message
}

impl Error {
    /// Translates a kube error for `attempt`.
    pub fn from_kube(attempt: Attempt, err: kube::Error) -> Error {
        match err {
            kube::Error::Api(status) if status.code == 403 => {
                let hint = (attempt.resource == "secrets").then_some(
                    "the built-in `view` role does not grant reading Secrets; `edit` and `admin` do",
                );
                Error::Forbidden { attempt, hint }
            }
            kube::Error::Api(status) if status.code == 404 => Error::NotFound(attempt),
            kube::Error::Api(status) => Error::Api {
                attempt,
                message: status.message.clone(),
            },
            other => Error::Api {
                attempt,
                message: other.to_string(),
            },
        }
    }

    /// Whether the server refused the request for lack of rights.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Forbidden { .. })
    }

    /// Process exit code: 1 for errors, 2 for a wait that timed out.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Timeout(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.object())
    }
}

/// `Result` with the plugin's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
