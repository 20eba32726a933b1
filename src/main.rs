//! The `multus` binary: a CNI plugin when `CNI_COMMAND` is set, a CLI otherwise.
//! This is the only place that writes to stdout.

use clap::{Parser, Subcommand};
use std::io::Write;
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
    Install(Box<multus::tools::install::Options>),
    /// The node agent: NAD mirror, metrics from the plugin's spool (never in the ADD path).
    Agent(multus::tools::agent::Options),
    /// Diagnose this node: config, plugins, API access and RBAC, cache, master links.
    Doctor(multus::tools::doctor::Options),
    /// Check NetworkAttachmentDefinitions and selection annotations offline, as a webhook would.
    Validate(multus::tools::validate::Options),
    /// Gzip a rotated logFile (started detached by the plugin after its result).
    #[command(hide = true)]
    CompressLog { path: std::path::PathBuf },
}

fn main() -> ExitCode {
    if multus::passthru::invoked_as_passthru() {
        let (doc, code) = multus::passthru::run_from_process();
        if let Some(doc) = doc {
            let _ = writeln!(std::io::stdout().lock(), "{doc}");
        }
        return ExitCode::from(code as u8);
    }
    if std::env::var_os("CNI_COMMAND").is_some() {
        let out = multus::commands::run_from_process();
        if let Some(doc) = out.stdout {
            let _ = writeln!(std::io::stdout().lock(), "{doc}");
        }
        // After the result: nothing the runtime waits for.
        multus::logging::after_result();
        return ExitCode::from(out.exit_code as u8);
    }
    cli()
}

/// Without CNI_COMMAND: the command line tools.
fn cli() -> ExitCode {
    // Go's `multus -version` (its flag package takes one dash); clap would read `-v -e ...`.
    if std::env::args_os().nth(1).is_some_and(|a| a == "-version") {
        print_version();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    match cli.command {
        _ if cli.version => print_version(),
        Some(Cmd::Version) => print_version(),
        Some(Cmd::Install(opts)) => {
            if let Err(e) = multus::tools::install::run(*opts) {
                eprintln!("multus install: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        Some(Cmd::Agent(opts)) => {
            multus::logging::init_stderr();
            if let Err(e) = multus::tools::agent::run_blocking(opts) {
                eprintln!("multus agent: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        Some(Cmd::Doctor(opts)) => return print_report(&multus::tools::doctor::run(&opts), opts.json),
        Some(Cmd::Validate(opts)) => match multus::tools::validate::run(&opts, std::io::stdin().lock()) {
            Ok(report) => return print_report(&report, opts.json),
            Err(e) => {
                eprintln!("multus validate: {e}");
                return ExitCode::from(2);
            }
        },
        Some(Cmd::CompressLog { path }) => {
            if let Err(e) = multus::logging::compress_rotated(&path) {
                eprintln!("multus compress-log: {e}");
                return ExitCode::FAILURE;
            }
        }
        None => {
            eprintln!(
                "meta-plugin that delegates to other CNI plugins\nCNI protocol versions supported: {}",
                multus::cni::version::SUPPORTED_VERSIONS.join(", ")
            );
            eprintln!("\nWithout CNI_COMMAND this is a CLI: run `multus --help` (install, doctor, validate).");
        }
    }
    ExitCode::SUCCESS
}

fn print_report(report: &multus::tools::doctor::Report, json: bool) -> ExitCode {
    let text = if json { report.to_json() } else { report.to_text() };
    // A reader that stops early (`| head`) is no reason to panic; the exit code still tells.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    ExitCode::from(report.exit_code())
}

fn print_version() {
    let _ = writeln!(
        std::io::stdout().lock(),
        "multus-rs: version:{}, commit:{}",
        env!("CARGO_PKG_VERSION"),
        option_env!("MULTUS_GIT_COMMIT").unwrap_or("unknown")
    );
}
