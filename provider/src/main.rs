//! bao-kms-provider: Kubernetes KMS v2 plugin for OpenBao Transit.
//!
//! Exit codes: 0 ok, 1 unclassified, 2 usage, 3 configuration,
//! 4 diagnostic check failed, 5 runtime failure after validation.

use std::path::PathBuf;
use std::process::ExitCode;

use bao_kms_core::config::validate::{Override, Overrides};
use bao_kms_core::config::{DEFAULT_CONFIG_PATH, LogFormat};
use bao_kms_provider::cli::{ApplyArgs, BenchmarkArgs, Cli, Command, ConfigWhat, LogLevelArg, Output, PolicyTarget};
use bao_kms_provider::report::FieldReport;
use bao_kms_provider::runtime::StartupError;
use bao_kms_provider::stdout::{print_or_exit, write_or_exit};
use bao_kms_provider::{config_file, logging, probe_cmd, serve};
use clap::{CommandFactory, Parser};

const EXIT_UNCLASSIFIED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_DIAGNOSTIC: u8 = 4;
const EXIT_RUNTIME: u8 = 5;

/// Flag overrides; they win over the environment and the file, and are
/// validated with the rest of the configuration.
fn flag_overrides(level: Option<LogLevelArg>, metrics: Option<String>, health: Option<String>) -> Overrides {
    let flag = |value: String, origin: &str| Override {
        value,
        origin: origin.to_owned(),
    };
    Overrides {
        log_level: level.map(|l| {
            let value = match l {
                LogLevelArg::Debug => "debug",
                LogLevelArg::Info => "info",
                LogLevelArg::Warn => "warn",
                LogLevelArg::Error => "error",
            };
            flag(value.to_owned(), "--log-level")
        }),
        metrics_address: metrics.map(|m| flag(m, "--metrics-address")),
        health_address: health.map(|h| flag(h, "--health-address")),
    }
}

/// `--config`, else the environment, else the default path; a relative
/// path is taken from the working directory.
fn config_path(flag: Option<PathBuf>) -> PathBuf {
    let path = flag
        .or_else(config_file::config_path_from_env)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    std::path::absolute(&path).unwrap_or(path)
}

/// The runtime of the one-shot commands.
fn current_thread_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().ok()
}

/// Runs a check-report command (`doctor`, `verify-key`, `probe`) and prints it.
fn report_command(run: impl Future<Output = bao_kms_provider::report::Report>, output: Output) -> ExitCode {
    match current_thread_runtime() {
        Some(rt) => emit(&rt.block_on(run), output),
        None => ExitCode::from(EXIT_UNCLASSIFIED),
    }
}

/// Prints a check report; exit 4 when any check failed.
fn emit(report: &bao_kms_provider::report::Report, output: Output) -> ExitCode {
    match output {
        Output::Text => print_or_exit(report.to_text().trim_end()),
        Output::Json => print_or_exit(report.to_json().trim_end()),
    }
    if report.failed() {
        ExitCode::from(EXIT_DIAGNOSTIC)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads the configuration of `--config` (or the environment's, or the
/// default); on failure prints every problem and gives exit code 3.
fn load_config(flag: Option<PathBuf>) -> Result<bao_kms_core::config::Config, ExitCode> {
    let path = config_path(flag);
    config_file::load(&path).map_err(|e| {
        eprintln!("configuration {}:\n{e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Prints a field report; exit 4 when it did not pass.
fn emit_fields(report: &FieldReport, output: Output) -> ExitCode {
    match output {
        Output::Text => print_or_exit(report.to_text().trim_end()),
        Output::Json => print_or_exit(&report.to_json()),
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DIAGNOSTIC)
    }
}

/// Runs a field-report command with the loaded configuration and prints it.
fn field_command<F, Fut>(config: Option<PathBuf>, output: Output, run: F) -> ExitCode
where
    F: FnOnce(bao_kms_core::config::Config) -> Fut,
    Fut: Future<Output = FieldReport>,
{
    let cfg = match load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    match current_thread_runtime() {
        Some(rt) => emit_fields(&rt.block_on(run(cfg)), output),
        None => ExitCode::from(EXIT_UNCLASSIFIED),
    }
}

fn benchmark(args: BenchmarkArgs) -> ExitCode {
    use bao_kms_provider::benchmark;
    let compare = args.config.is_some() && args.socket.is_some();
    let concurrency: Vec<usize> = match (args.concurrency.len(), compare) {
        (0, true) => vec![1, 16],
        (0, false) => vec![1],
        (1, _) | (_, true) => args.concurrency.iter().map(|&c| c as usize).collect(),
        (_, false) => {
            eprintln!("--concurrency takes one value unless both --config and --socket are given");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Concurrent round trips want more than one thread.
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return ExitCode::from(EXIT_UNCLASSIFIED);
    };
    let iterations = args.iterations as usize;
    let report = match (args.socket, compare) {
        (Some(socket), true) => {
            let path = config_path(args.config.clone());
            let cfg = match load_config(args.config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let plan = benchmark::compare::Plan {
                iterations,
                in_flight: concurrency,
                rounds: args.rounds as usize,
                burst_connections: args.burst_connections as usize,
                burst_distinct: args.burst_distinct as usize,
                burst_identical: args.burst_identical as usize,
                startup_runs: args.startup_runs as usize,
                kms_timeout: args.kms_timeout,
                connect_timeout: args.timeout,
            };
            rt.block_on(benchmark::compare::compare(&cfg, &path, &socket, &plan))
        }
        (Some(socket), false) => rt.block_on(benchmark::socket(&socket, args.timeout, iterations, concurrency[0])),
        (None, _) => match load_config(args.config) {
            Ok(cfg) => rt.block_on(benchmark::transit(&cfg, iterations, concurrency[0])),
            Err(code) => return code,
        },
    };
    if let Some(file) = &args.json_file
        && let Err(e) = std::fs::write(file, report.to_json() + "\n")
    {
        eprintln!("writing {}: {e}", file.display());
        return ExitCode::from(EXIT_UNCLASSIFIED);
    }
    match (compare, args.output) {
        (true, Output::Text) => {
            print_or_exit(benchmark::compare::table(&report.report).trim_end());
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DIAGNOSTIC)
            }
        }
        (_, output) => emit_fields(&report, output),
    }
}

/// `retire-versions` and `restore-versions`: plan, or apply with the reviewed hash.
fn versions_command(
    config: Option<PathBuf>,
    request: bao_kms_provider::retire::Request,
    expected_state_hash: Option<String>,
    output: Output,
) -> ExitCode {
    field_command(config, output, |cfg| async move {
        bao_kms_provider::retire::run(&cfg, &request, expected_state_hash.as_deref()).await
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let log_level = cli.log_level;
    // serve takes --log-level as an override of logging.level; init refuses it.
    if let Some(level) = log_level
        && !matches!(cli.command, Command::Serve { .. } | Command::Init(_))
    {
        logging::init(level.into(), LogFormat::Json);
    }
    match cli.command {
        Command::Version => {
            let b = bao_kms_provider::build::current();
            print_or_exit(&format!(
                "version: {}\ncommit: {}\nbuildDate: {}\ndirty: {}",
                b.version, b.commit, b.build_date, b.dirty
            ));
            ExitCode::SUCCESS
        }
        Command::Completion { shell } => {
            // Rendered first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bao-kms-provider", &mut script);
            write_or_exit(&script);
            ExitCode::SUCCESS
        }
        Command::Config {
            what: Some(ConfigWhat::Schema),
            ..
        } => {
            print_or_exit(&bao_kms_core::config::schema::json_schema_pretty());
            ExitCode::SUCCESS
        }
        Command::Config { config, what: None } => match load_config(config) {
            Ok(cfg) => {
                print_or_exit(&format!(
                    "{}# identity fingerprint: {}",
                    config_file::resolved_yaml(&cfg),
                    cfg.identity_scope().fingerprint()
                ));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Policy {
            target: PolicyTarget::Openbao {
                config,
                include_token_renewal,
            },
        } => match load_config(config) {
            Ok(cfg) => {
                print_or_exit(&bao_kms_provider::policy::openbao_policy(&cfg, include_token_renewal));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Benchmark(args) => benchmark(args),
        Command::KeySnapshots {
            config,
            key_id,
            key_id_hash,
            output,
        } => match load_config(config) {
            Ok(cfg) => {
                use bao_kms_provider::key_snapshots::{self, Selector};
                let selector = match (key_id, key_id_hash) {
                    (Some(k), _) => Selector::KeyId(k),
                    (None, Some(hash)) => Selector::KeyIdHash(hash),
                    (None, None) => Selector::All,
                };
                let report = key_snapshots::run(&cfg, &selector);
                match output {
                    Output::Text => print_or_exit(key_snapshots::to_text(&report).trim_end()),
                    Output::Json => print_or_exit(&report.to_json()),
                }
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_DIAGNOSTIC)
                }
            }
            Err(code) => code,
        },
        Command::Init(args) => ExitCode::from(bao_kms_provider::init::run(args, log_level.is_some())),
        Command::RotationPlan { config, output } => field_command(config, output, |cfg| async move {
            bao_kms_provider::rotation_plan::run(&cfg, false).await
        }),
        Command::VerifyRotation {
            config,
            storage_report,
            output,
        } => field_command(config, output, |cfg| async move {
            bao_kms_provider::rotation_plan::run_with(&cfg, true, storage_report.as_deref()).await
        }),
        Command::RetireVersions {
            config,
            before_version,
            storage_report,
            apply: ApplyArgs {
                expected_state_hash, ..
            },
            output,
        } => versions_command(
            config,
            bao_kms_provider::retire::Request::Retire {
                before_version,
                storage_report,
            },
            expected_state_hash,
            output,
        ),
        Command::RestoreVersions {
            config,
            versions,
            apply: ApplyArgs {
                expected_state_hash, ..
            },
            output,
        } => versions_command(
            config,
            bao_kms_provider::retire::Request::Restore { versions },
            expected_state_hash,
            output,
        ),
        Command::Repin {
            config,
            apply: ApplyArgs {
                expected_state_hash, ..
            },
            output,
        } => field_command(config, output, |cfg| async move {
            bao_kms_provider::repin::run(&cfg, expected_state_hash.as_deref()).await
        }),
        Command::VerifyKey { config, output } => {
            let config = config_path(config);
            report_command(
                bao_kms_provider::doctor::run_mode(&config, bao_kms_provider::doctor::Mode::VerifyKey),
                output,
            )
        }
        Command::Doctor {
            config,
            encryption_config,
            output,
        } => {
            let config = config_path(config);
            report_command(
                bao_kms_provider::doctor::run(&config, encryption_config.as_deref()),
                output,
            )
        }
        Command::Probe {
            socket,
            timeout,
            expected_key_id,
            output,
        } => report_command(probe_cmd::run(&socket, timeout, expected_key_id.as_deref()), output),
        Command::Serve {
            config,
            metrics_address,
            health_address,
        } => {
            let config = config_path(config);
            let flags = flag_overrides(log_level, metrics_address, health_address);
            let cfg = match config_file::load_with(&config, &|k| std::env::var(k).ok(), flags) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("configuration {}:\n{e}", config.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            logging::init(cfg.logging.level, cfg.logging.format);
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
                eprintln!("cannot start the async runtime");
                return ExitCode::from(EXIT_RUNTIME);
            };
            let state_path = cfg.state.path.clone();
            match rt.block_on(serve::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let code = match e {
                        StartupError::Config(_) => EXIT_CONFIG,
                        StartupError::FailClosed(_) => EXIT_RUNTIME,
                    };
                    tracing::error!(message = "serve.shutdown", startup_failed = true, error = %e);
                    if matches!(e, StartupError::FailClosed(_)) {
                        serve::record_last_exit(&state_path, &e.to_string(), i32::from(code));
                    }
                    eprintln!("bao-kms-provider: {e}");
                    ExitCode::from(code)
                }
            }
        }
    }
}
