//! The `jwt-key-operator` binary: wires the command line to the library.
#![forbid(unsafe_code)]

use clap::Parser;
use jwt_key_operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Crd => {
            print!("{}", jwt_key_operator::crd::crd_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run(args) => jwt_key_operator::run::run(args).await,
        Command::ServeJwks(args) => jwt_key_operator::serve_jwks::serve_jwks(args).await,
    }
}
