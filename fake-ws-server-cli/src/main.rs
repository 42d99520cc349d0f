//! `fake-ws-server`: see the crate's README.

use clap::Parser;

fn main() -> std::process::ExitCode {
    fake_ws_server_cli::run::main(fake_ws_server_cli::run::Args::parse())
}
