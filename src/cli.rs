//! Command line of the `jwt-key-operator` binary.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

/// Generates, publishes and rotates RSA JWT signing keys on Kubernetes.
#[derive(Parser, Debug)]
#[command(
    name = "jwt-key-operator",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run`, also accepted without the subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (default).
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Print the CustomResourceDefinition YAML.
    Crd,
    /// Serve a mounted JWKS ConfigMap over HTTP (/.well-known/jwks.json, OpenID discovery).
    ServeJwks(ServeJwksArgs),
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of the controller.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Namespace to watch; repeat the flag or separate with commas. Default: all namespaces.
    #[arg(
        long = "watch-namespace",
        env = "WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,

    /// Address of the HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "HTTP_ADDRESS", default_value = "0.0.0.0")]
    pub http_address: String,

    /// Port of the HTTP server; 0 picks a free port (logged at start-up).
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Elect a leader through a Lease so that only one replica writes.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the Lease. Default: $POD_NAMESPACE, else the first watched namespace, else `default`.
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, env = "LEADER_ELECTION_ID", default_value = "jwt-key-operator")]
    pub leader_election_id: String,

    /// Seconds a leader holds the Lease without renewing it; standbys take over after this.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// Extra wait before a next key starts signing, beyond propagationDelay, for clock skew between
    /// replicas (Go duration).
    #[arg(long, env = "ACTIVATION_MARGIN", default_value = "1s")]
    pub activation_margin: crate::duration::GoDuration,
}

/// Options of `serve-jwks`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeJwksArgs {
    /// Directory where the JWKS ConfigMap is mounted (holds `jwks.json`).
    #[arg(long, env = "JWKS_DIR")]
    pub dir: PathBuf,

    /// Issuer URL (the tokens' `iss`): also serve `<issuer path>/.well-known/openid-configuration`
    /// with `jwks_uri` = `<issuer>/.well-known/jwks.json`.
    #[arg(long, env = "ISSUER")]
    pub issuer: Option<String>,

    /// Address of the HTTP server.
    #[arg(long, env = "HTTP_ADDRESS", default_value = "0.0.0.0")]
    pub http_address: String,

    /// Port of the HTTP server; 0 picks a free port (logged at start-up).
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// `Cache-Control: max-age` of the responses, in seconds. Verifiers that honour it may use
    /// a key set this much older than the mount: keep it well below `propagationDelay`.
    #[arg(long, env = "MAX_AGE_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub max_age: u32,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
