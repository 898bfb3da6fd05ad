//! The `cri-lxc` binary: the daemon (no subcommand), `config`, `version`. Hidden helper subcommands (the
//! per-container monitor, the exec helper) are dispatched here before any tokio runtime exists, because
//! they fork through liblxc.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cri_lxc::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "cri-lxc", version, about = "Kubernetes CRI server running containers as LXC containers")]
struct Cli {
    /// Config file (TOML). Optional: built-in defaults apply when the default file is absent.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// gRPC socket path [default: /run/cri-lxc/cri-lxc.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Persistent data dir [default: /var/lib/cri-lxc]
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Runtime state dir [default: /run/cri-lxc]
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. info, debug, cri_lxc=trace
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration as TOML.
    Config,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    // Helper processes first: they fork through liblxc and must stay single-threaded, so they run
    // before clap, tracing or tokio set anything up.
    if let Some(code) = run_helper_subcommand() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    let overrides = Overrides { socket: cli.socket, root: cli.root, state: cli.state, log_level: cli.log_level };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-lxc: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Config) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Some(Command::Version) => {
            println!("cri-lxc {} (CRI API v1)", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        None => run_daemon(config),
    }
}

/// `__monitor <spec>`, `__monitor-start <spec> <result>`, `__exec <context> -- argv…`,
/// `__pod-infra <dir>`, `__pause <dir>`, `__pod-userns <namespaces> <hostname>`: the hidden
/// subcommands the daemon re-executes itself as. None when this is not one of them.
fn run_helper_subcommand() -> Option<i32> {
    use cri_lxc::runtime::{infra, userns};
    use cri_lxc::runtime::lxc::{exec, monitor};
    let args: Vec<String> = std::env::args().collect();
    let code = match (args.get(1).map(String::as_str), args.len()) {
        (Some(monitor::MONITOR_SUBCOMMAND), 3) => monitor::run_monitor(std::path::Path::new(&args[2])),
        (Some(monitor::START_SUBCOMMAND), 4) => monitor::run_start_helper(std::path::Path::new(&args[2]), std::path::Path::new(&args[3])),
        (Some(exec::EXEC_SUBCOMMAND), _) => exec::run_exec_helper(&args[2..]),
        (Some(infra::INFRA_SUBCOMMAND), _) => infra::run_infra_helper(&args[2..]),
        (Some(infra::PAUSE_SUBCOMMAND), 3) => infra::run_pause(),
        (Some(userns::USERNS_SUBCOMMAND), _) => userns::run_userns_helper(&args[2..]),
        _ => return None,
    };
    Some(code)
}

fn run_daemon(config: Config) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRI_LXC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cri-lxc: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cri_lxc::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The log goes to stderr already; one line is enough.
            tracing::error!("cri-lxc: {e}");
            ExitCode::FAILURE
        }
    }
}
