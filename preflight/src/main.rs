//! `bao-kms-preflight`: parse flags, run the command, print the report,
//! exit with a named code (see [`bao_kms_preflight::exit`]).

use std::io::Write;
use std::process::ExitCode;

use bao_kms_preflight::cli::{Cli, Command, KubeFlags};
use bao_kms_preflight::report::{OutputFormat, to_json, to_yaml};
use bao_kms_preflight::{agent, cluster, exit, kube_api, node, rewrite, storage};

fn main() -> ExitCode {
    let cli = Cli::parse_invoked();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bao-kms-preflight: cannot start the runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    ExitCode::from(runtime.block_on(run(cli.command)))
}

async fn run(command: Command) -> u8 {
    match command {
        Command::Node(args) => {
            let outcome = node::run(&args.flags.options()).await;
            print(&bao_kms_preflight::report::render(&outcome.report, args.output));
            if outcome.report.failed() {
                exit::CHECK_FAILED
            } else {
                exit::OK
            }
        }
        Command::Agent(args) => {
            let (client, namespace) = match connect(&args.kube).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let opts = agent::AgentOptions {
                node: args.flags.options(),
                node_name: args.node_name,
                namespace,
                interval: args.interval,
                once: args.once,
            };
            match agent::run(client, opts, shutdown()).await {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("bao-kms-preflight agent: {}", e.with_fix());
                    exit::RUNTIME
                }
            }
        }
        Command::Cluster(args) => {
            let (client, namespace) = match connect(&args.kube).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let opts = cluster::ClusterOptions {
                namespace,
                max_age: args.max_age,
                phase: args.phase,
                before_key_id_hash: args.before_key_id_hash,
                expected: bao_kms_core::checks::artifact::Expected {
                    image_digest: args.expected_image_digest,
                    binary_digest: args.expected_binary_digest,
                },
            };
            match cluster::run(&client, &opts).await {
                Ok(report) => {
                    print(&match args.output {
                        OutputFormat::Table => report.to_table(),
                        OutputFormat::Json => to_json(&report),
                        OutputFormat::Yaml => to_yaml(&report),
                    });
                    if report.passed { exit::OK } else { exit::CHECK_FAILED }
                }
                Err(e) => {
                    eprintln!("bao-kms-preflight cluster: {}", e.with_fix());
                    exit::RUNTIME
                }
            }
        }
        Command::Storage(args) => match storage::run(&args.options(), unix_now()).await {
            Ok(out) => {
                print(&out.render(args.output));
                if out.failed() { exit::CHECK_FAILED } else { exit::OK }
            }
            Err(e) => {
                eprintln!("bao-kms-preflight storage: {e}");
                exit::RUNTIME
            }
        },
        Command::Rewrite(args) => {
            let (client, _) = match connect(&args.kube).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            match rewrite::run(&client, &args.options()).await {
                Ok(summary) => {
                    print(&summary.render(args.output));
                    if summary.error.is_some() {
                        exit::RUNTIME
                    } else if summary.failed() {
                        exit::CHECK_FAILED
                    } else {
                        exit::OK
                    }
                }
                Err(rewrite::RewriteError::Usage(e)) => {
                    eprintln!("bao-kms-preflight rewrite: {e}");
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("bao-kms-preflight rewrite: {e}");
                    exit::RUNTIME
                }
            }
        }
    }
}

/// JSON logs on stderr: at `--log-level` when given; the agent otherwise
/// at `RUST_LOG` or info; the one-shot commands otherwise not at all.
fn init_logging(cli: &Cli) {
    let filter = match (cli.log_level, &cli.command) {
        (Some(level), _) => tracing_subscriber::EnvFilter::new(level.as_str()),
        (None, Command::Agent(_)) => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        (None, _) => return,
    };
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// A client and the namespace of the report Leases (`-n`, else the
/// kubeconfig context's).
async fn connect(flags: &KubeFlags) -> Result<(kube_api::KubeApi, String), u8> {
    match kube_api::client(
        flags.kubeconfig.as_deref(),
        flags.context.as_deref(),
        flags.connect_timeout,
    )
    .await
    {
        Ok((client, ns)) => Ok((client, flags.namespace.clone().unwrap_or(ns))),
        Err(e) => {
            eprintln!("bao-kms-preflight: {e}");
            Err(exit::RUNTIME)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the agent runs until killed.
        _ => std::future::pending().await,
    }
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
