//! `kubectl jwtkeys`: a kubectl plugin for jwt-key-operator's JwtSigningKeys. `status` shows each
//! key's schedule, where its kids are published, its Ready condition and events; `rotate` and
//! `revoke` set the operator's annotations and wait for the result; `inspect` describes the keys in
//! a Secret or ConfigMap without ever printing a private key; `verify` tells which key signed a
//! token and whether every published ConfigMap verifies it.
#![forbid(unsafe_code)]

mod cluster;
mod error;
mod inspect;
mod operations;
mod status;
mod table;
mod verify;

use std::{io::Read, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use serde::Serialize;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
};

/// Inspect and operate jwt-key-operator's JWT signing keys.
#[derive(Parser, Debug)]
#[command(name = "kubectl jwtkeys", version, about)]
struct Cli {
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Keys with their state and instants, where each kid is published, Ready and the last events.
    Status {
        /// One JwtSigningKey (default: every one in the namespace).
        name: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long, conflicts_with = "name")]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Starts a rotation now: a new key is published at once and signs after propagationDelay.
    Rotate {
        /// The JwtSigningKey.
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Emergency: removes keys from the Secret and every ConfigMap at once.
    Revoke {
        /// The JwtSigningKey.
        name: String,
        /// Key ids to revoke.
        #[arg(required = true)]
        kids: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Describes the keys in a Secret or ConfigMap (never prints private keys).
    Inspect {
        #[command(subcommand)]
        object: InspectObject,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
        output: Output,
    },
    /// Which key signed a token and whether each published ConfigMap verifies it now.
    Verify {
        /// The token (default: read from stdin).
        #[arg(long)]
        token: Option<String>,
        /// Look for the key in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Subcommand, Debug)]
enum InspectObject {
    /// The signing key Secret.
    Secret {
        /// Its name.
        name: String,
    },
    /// A ConfigMap that publishes public keys (home or copy).
    #[command(alias = "cm")]
    Configmap {
        /// Its name.
        name: String,
    },
}

#[derive(clap::Args, Debug)]
struct Wait {
    /// Wait until the operator has done it and show the result.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
}

impl Wait {
    fn timeout(&self) -> Option<Duration> {
        self.wait.then_some(self.timeout)
    }
}

fn parse_timeout(value: &str) -> std::result::Result<Duration, String> {
    value
        .parse::<jwt_key_operator::duration::GoDuration>()
        .map(|d| d.as_std())
        .map_err(|e| format!("{e} (e.g. 90s, 5m)"))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    Yaml,
}

fn print<T: Serialize>(output: Output, value: &T, table: impl FnOnce() -> String) -> Result<()> {
    let text = match output {
        Output::Table => table(),
        Output::Json => {
            serde_json::to_string_pretty(value).expect("reports serialize to JSON") + "\n"
        }
        Output::Yaml => serde_saphyr::to_string(value)
            .map_err(|e| Error::Invalid(format!("writing YAML: {e}")))?,
    };
    print!("{text}");
    Ok(())
}

/// The token of `verify`: `--token`, else stdin; checked before anything connects.
fn read_token(token: Option<String>) -> Result<String> {
    let token = match token {
        Some(token) => token,
        None => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .map_err(|e| Error::Invalid(format!("reading the token from stdin: {e}")))?;
            token
        }
    };
    if token.trim().is_empty() {
        return Err(Error::Invalid(
            "no token: pass --token or pipe one into stdin".into(),
        ));
    }
    verify::check(&token)?;
    Ok(token)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let token = match &cli.command {
        Command::Verify { token, .. } => Some(read_token(token.clone())?),
        _ => None,
    };
    let cluster = Cluster::connect(cli.context, cli.namespace).await?;
    let now = Timestamp::now();
    match cli.command {
        Command::Status {
            name,
            all_namespaces,
            output,
        } => {
            let keys = match &name {
                Some(name) => vec![cluster.key(name).await?],
                None => cluster.keys(all_namespaces).await?,
            };
            let mut reports = Vec::new();
            for key in &keys {
                reports.push(status::report(&cluster, key).await);
            }
            if output == Output::Table && reports.is_empty() {
                let scope = if all_namespaces {
                    "any namespace".to_string()
                } else {
                    format!("namespace {}", cluster.namespace)
                };
                eprintln!("No JwtSigningKeys in {scope}.");
                return Ok(ExitCode::SUCCESS);
            }
            print(output, &reports, || {
                reports
                    .iter()
                    .map(|r| status::render(r, now))
                    .collect::<Vec<_>>()
                    .join("\n---\n\n")
            })?;
        }
        Command::Rotate { name, wait } => {
            print!(
                "{}",
                operations::rotate(&cluster, &name, wait.timeout()).await?
            );
        }
        Command::Revoke {
            name,
            kids,
            yes,
            wait,
        } => {
            print!(
                "{}",
                operations::revoke(&cluster, &name, &kids, yes, wait.timeout()).await?
            );
        }
        Command::Inspect { object, output } => {
            let inspection = match object {
                InspectObject::Secret { name } => inspect::secret(&cluster, &name).await?,
                InspectObject::Configmap { name } => inspect::config_map(&cluster, &name).await?,
            };
            print(output, &inspection, || inspect::render(&inspection, now))?;
        }
        Command::Verify {
            all_namespaces,
            output,
            ..
        } => {
            let token = token.expect("read before connecting");
            let verification = verify::verify(&cluster, &token, all_namespaces).await?;
            print(output, &verification, || verify::render(&verification, now))?;
            if !verification.verifies_everywhere {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Signature checks use aws-lc-rs, the operator's own backend, whatever features the workspace
    // unifies.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses_as_documented() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "kubectl-jwtkeys",
            "-n",
            "auth",
            "revoke",
            "k",
            "a",
            "b",
            "--yes",
        ]);
        assert_eq!(cli.namespace.as_deref(), Some("auth"));
        let Command::Revoke {
            kids, yes, wait, ..
        } = cli.command
        else {
            panic!("revoke")
        };
        assert_eq!(kids, ["a", "b"]);
        assert!(yes);
        assert_eq!(wait.timeout(), Some(Duration::from_secs(60)));
        let cli = Cli::parse_from(["kubectl-jwtkeys", "rotate", "k", "--wait=false"]);
        let Command::Rotate { wait, .. } = cli.command else {
            panic!("rotate")
        };
        assert_eq!(wait.timeout(), None);
        assert!(Cli::try_parse_from(["kubectl-jwtkeys", "status", "k", "-A"]).is_err());
        assert!(
            Cli::try_parse_from(["kubectl-jwtkeys", "rotate", "k", "--timeout", "soon"]).is_err()
        );
    }

    use clap::CommandFactory;
}
