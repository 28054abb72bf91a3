//! # datalayer: the node binary and CLI
//!
//! `datalayer start` runs a node; every other command is a client of a running node
//! (over gRPC, through `datalayer-client`). Exit codes: 0 success, 1 key not found,
//! 2 any error (with a message on stderr).

mod cli;
mod config;
mod http;
mod limits;
mod metrics;
mod prom;
mod server;
mod service;
mod status;

fn main() -> std::process::ExitCode {
    cli::main()
}
