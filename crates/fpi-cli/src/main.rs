//! `fpi`: turn a photo and its prompt into the Stable Diffusion 1.5 seed that regenerates it.

#[cfg(not(target_family = "wasm"))]
mod args;
#[cfg(not(target_family = "wasm"))]
mod batch;
#[cfg(not(target_family = "wasm"))]
mod commands;
#[cfg(not(target_family = "wasm"))]
mod derived;
#[cfg(not(target_family = "wasm"))]
mod failure;
#[cfg(not(target_family = "wasm"))]
mod files;
#[cfg(not(target_family = "wasm"))]
mod model;
#[cfg(not(target_family = "wasm"))]
mod progress;

#[cfg(not(target_family = "wasm"))]
fn main() -> std::process::ExitCode {
    use clap::Parser;

    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line tool is native only (`cargo test` also builds bins for wasm32 targets).
#[cfg(target_family = "wasm")]
fn main() {}
