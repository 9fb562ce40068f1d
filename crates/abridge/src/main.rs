//! `abridge`: one binary, many roles. `main` parses the command line, loads configuration and
//! hands over to a command; the work itself lives in the library crates.

mod cli;
mod commands;
mod context;
mod processors;
#[cfg(test)]
mod settings_table;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: a worker allocates and frees small objects per item on many threads, which
/// glibc's allocator does slowly; measured in `abridge bench` (worker CPU per item).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and
    // every fresh allocator page then faults in (and zeroes) a whole 2 MiB page, again after
    // each purge (BENCHMARKS.md, "What bounds each figure"). Best effort: a kernel without the prctl keeps
    // its default.
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
