//! `bao-kms-man DIR`: writes the section 1 man pages of both binaries into
//! DIR, one page per command and subcommand (`bao-kms-provider.1`,
//! `bao-kms-provider-serve.1`, ...), from the same clap definitions the
//! binaries parse, so the pages always describe the CLI they ship with.
//! The Debian package runs it at build time.
//!
//! Pages carry no date, so the same CLI gives byte-identical pages.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: bao-kms-man <output directory>");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("bao-kms-man: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for command in [
        bao_kms_provider::cli::Cli::command(),
        bao_kms_preflight::cli::Cli::command(),
    ] {
        let name = command.get_name().to_owned();
        if let Err(e) = clap_mangen::generate_to(command, &dir) {
            eprintln!("bao-kms-man: writing the pages of {name} into {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
