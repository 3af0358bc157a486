//! The `synapsor` command: `run` serves a config, `check` validates one, `version` prints the
//! version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "synapsor", version, about = "A transparent gRPC gateway")]
struct Cli {
    /// Log level (error, warn, info, debug, trace) or a RUST_LOG-style filter. RUST_LOG wins
    /// when set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration (the default command).
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "config/synapsor.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration and print the effective config; serves nothing.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "config/synapsor.yaml")]
        config: PathBuf,
    },
    /// Exit 0 when the admin listener answers `path` with 200 (for container health checks).
    Healthcheck {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// The path to ask (`/healthz` or `/readyz`).
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match cli.command.unwrap_or(Command::Run {
        config: PathBuf::from("config/synapsor.yaml"),
    }) {
        Command::Version => {
            println!("synapsor {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match synapsor::config::load(&config) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("warning: {w}");
                }
                print!(
                    "{}",
                    serde_yaml::to_string(&loaded.config).expect("serializable config")
                );
                for l in &loaded.config.listeners {
                    let mut chain: Vec<String> = l.interceptors.iter().map(stage_label).collect();
                    chain.push("route".into());
                    eprintln!("listener {} ({}): {}", l.name, l.listen, chain.join(" -> "));
                    for (i, r) in l.routes.iter().enumerate() {
                        if !r.interceptors.is_empty() {
                            let own: Vec<String> = r.interceptors.iter().map(stage_label).collect();
                            eprintln!(
                                "  route {i} (to {}): then {} -> {}",
                                r.upstream,
                                own.join(" -> "),
                                r.upstream
                            );
                        }
                    }
                }
                if !check_plugins(&loaded.config) || !check_tls(&loaded.config) {
                    return ExitCode::from(2);
                }
                eprintln!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => run(config),
        Command::Healthcheck { admin, path } => match healthcheck(admin, &path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// One HTTP/1.1 GET to the admin listener, with a 2 s bound on each step.
fn healthcheck(admin: std::net::SocketAddr, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let t = std::time::Duration::from_secs(2);
    let mut s =
        std::net::TcpStream::connect_timeout(&admin, t).map_err(|e| format!("{admin}: {e}"))?;
    let _ = s.set_read_timeout(Some(t));
    let _ = s.set_write_timeout(Some(t));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    match &head[9..12] {
        b"200" => Ok(()),
        other => Err(format!(
            "{path} answered {}",
            String::from_utf8_lossy(other)
        )),
    }
}

fn run(path: PathBuf) -> ExitCode {
    let loaded = match synapsor::config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    // This runtime runs the acceptors, the admin listener and signal handling; calls are served
    // by the gateway's own worker threads, one per core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let gateway = match synapsor::Gateway::bind(loaded.config).await {
            Ok(g) => g.with_source(path),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(1);
            }
        };
        let running = match gateway.start() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(1);
            }
        };
        wait_for_signal(running.reloader()).await;
        tracing::info!("shutting down: no new connections, draining calls in flight");
        if running.shutdown().await {
            tracing::info!("drained; bye");
        } else {
            tracing::warn!("drain_timeout passed with calls still in flight; exiting");
        }
        ExitCode::SUCCESS
    })
}

/// A stage as `synapsor check` shows it in a chain: its kind, and a plugin's name.
fn stage_label(s: &synapsor::config::StageConfig) -> String {
    match s {
        synapsor::config::StageConfig::Wasm(w) => format!("wasm:{}", w.name),
        other => other.kind().to_string(),
    }
}

/// Compiles and `init`s every configured plugin and prints its imports and exports; false when
/// one fails.
fn check_plugins(config: &synapsor::config::Config) -> bool {
    let mut ok = true;
    for l in &config.listeners {
        let lists =
            std::iter::once(&l.interceptors).chain(l.routes.iter().map(|r| &r.interceptors));
        for stage in lists.flatten() {
            let synapsor::config::StageConfig::Wasm(w) = stage else {
                continue;
            };
            match synapsor::plugin::describe(w) {
                Ok(d) => {
                    eprintln!(
                        "plugin {} ({}): compiled and initialised, contract {}{}",
                        w.name,
                        w.path.display(),
                        d.contract,
                        if d.wasi { "; WASI p2 linked" } else { "" }
                    );
                    if !d.message_hooks.is_empty() {
                        eprintln!("  message hooks: {}", d.message_hooks.join(", "));
                    }
                    eprintln!("  exports: {}", d.exports.join(", "));
                    eprintln!("  imports: {}", d.imports.join(", "));
                    callout_warning(w, &d.imports);
                    cost_notes(w, &d);
                }
                Err(e) => {
                    eprintln!("error: listener {}: plugin {}: {e}", l.name, w.name);
                    ok = false;
                }
            }
        }
    }
    ok
}

/// What one instance of a plugin costs, and the warnings about it (see
/// `Description::warnings`).
fn cost_notes(w: &synapsor::config::WasmConfig, d: &synapsor::plugin::Description) {
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    eprintln!(
        "  instance: {:.1} MiB of linear memory (memory_limit {}), created and initialised in \
         {:.1} ms; compiled in {:.1} s",
        mib(d.memory),
        w.memory_limit,
        d.instantiate.as_secs_f64() * 1e3,
        d.compile.as_secs_f64()
    );
    for w in d.warnings(w) {
        eprintln!("  warning: {w}");
    }
}

/// Warns when a plugin imports the `callout` interface but its YAML allows it no upstream group:
/// every callout it makes would fail `not-allowed`.
fn callout_warning(w: &synapsor::config::WasmConfig, imports: &[String]) {
    let calls_out = imports
        .iter()
        .any(|i| i.starts_with("synapsor:plugin/callout@"));
    let groups = w.callouts.as_ref().map_or(0, |c| c.groups.len());
    if calls_out && groups == 0 {
        eprintln!(
            "  note: it imports synapsor:plugin/callout, but callouts.groups allows no \
             upstream group: any callout it makes fails not-allowed (Python and JavaScript \
             plugins import every interface of the contract, used or not)"
        );
    }
}

/// Loads every TLS certificate, key and CA file; false when one fails.
fn check_tls(config: &synapsor::config::Config) -> bool {
    let mut ok = true;
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            match synapsor::tls::ServerTls::new(t) {
                Ok(_) => eprintln!("listener {}: TLS certificate and key load", l.name),
                Err(e) => {
                    eprintln!("error: listener {}: tls: {e}", l.name);
                    ok = false;
                }
            }
        }
    }
    for u in &config.upstreams {
        if let Some(t) = &u.tls {
            if let Err(e) = synapsor::tls::ClientTls::new(t) {
                eprintln!("error: upstream {}: tls: {e}", u.name);
                ok = false;
            }
        }
    }
    ok
}

async fn wait_for_signal(reloader: Option<synapsor::Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config, and plugins whose files changed");
                if let Some(r) = reloader.clone() {
                    // The reload task logs the outcome.
                    tokio::spawn(async move { r.reload().await });
                }
                // Compiling is slow: off this runtime, which also runs the acceptors.
                std::thread::spawn(synapsor::plugin::reload_all);
            }
        }
    }
}

/// glibc gives freed memory back to the kernel as soon as more than 128 KiB lies free at the top
/// of a heap, so a connection moving 64 KiB messages kept returning its buffers' pages
/// (`madvise`) and faulting them in again on the next read: 12% of the gateway's CPU under
/// 64 KiB streaming. glibc raises that threshold to twice the size of any freed block it had
/// mapped separately (mallopt(3), "dynamic mmap threshold"); one such block of 1 MiB at start
/// sets it to 2 MiB per heap, which bounds what stays mapped. Other allocators ignore this.
fn keep_freed_memory() {
    let block: Vec<u8> = Vec::with_capacity(1 << 20);
    drop(std::hint::black_box(block));
}
