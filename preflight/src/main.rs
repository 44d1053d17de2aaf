//! `bao-kms-preflight`: parse flags, run the command, print the report,
//! exit with a named code (see [`bao_kms_preflight::exit`]).

use std::io::Write;
use std::process::ExitCode;

use bao_kms_preflight::cli::{Cli, Command};
use bao_kms_preflight::{exit, node};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bao-kms-preflight: cannot start the runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => {
                let outcome = node::run(&args.flags.options()).await;
                print(&outcome.report.render(args.output));
                if outcome.report.failed() {
                    exit::CHECK_FAILED
                } else {
                    exit::OK
                }
            }
        }
    });
    ExitCode::from(code)
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
