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
    // No transparent huge pages for this process. mimalloc asks for them on its arenas, and
    // then every fresh allocator page faults in (and zeroes) a whole 2 MiB huge page, again
    // after each purge: 13 % of a worker's CPU in a burn-down profile went to that
    // (BENCHMARKS.md). Ordinary 4 KiB faults zero only what is touched. Best effort: a kernel
    // without the prctl just keeps its default.
    let _ = nix::sys::prctl::set_thp_disable(true);
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
