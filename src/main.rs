//! The `multus` binary: a CNI plugin when `CNI_COMMAND` is set, a CLI otherwise.
//! This is the only place that writes to stdout.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "multus",
    about = "multus-rs: a drop-in replacement for the Multus CNI thin plugin",
    disable_version_flag = true
)]
struct Cli {
    /// Print version and commit, then exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print version and commit.
    Version,
    /// Install Multus on this node and keep its files current (the DaemonSet's entrypoint).
    Install(Box<multus::install::Options>),
}

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_some() {
        let out = multus::commands::run_from_process();
        if let Some(doc) = out.stdout {
            println!("{doc}");
        }
        return ExitCode::from(out.exit_code as u8);
    }
    let cli = Cli::parse();
    match cli.command {
        _ if cli.version => print_version(),
        Some(Cmd::Version) => print_version(),
        Some(Cmd::Install(opts)) => {
            if let Err(e) = multus::install::run(*opts) {
                eprintln!("multus install: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        None => {
            eprintln!(
                "meta-plugin that delegates to other CNI plugins\nCNI protocol versions supported: {}",
                multus::cni::version::SUPPORTED_VERSIONS.join(", ")
            );
        }
    }
    ExitCode::SUCCESS
}

fn print_version() {
    println!(
        "multus-rs: version:{}, commit:{}",
        env!("CARGO_PKG_VERSION"),
        option_env!("MULTUS_GIT_COMMIT").unwrap_or("unknown")
    );
}
