//! `abridge`: one binary, many roles. `main` parses the command line, loads configuration and
//! hands over to a command; the work itself lives in the library crates.

mod cli;
mod commands;
mod context;
mod processors;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: a worker allocates and frees small objects per item on many threads, which
/// glibc's allocator does slowly; measured in `abridge bench` (worker CPU per item).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
