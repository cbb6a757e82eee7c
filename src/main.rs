//! The `mqtt2xmpp` binary: parse flags, set up logging, wire SIGINT/SIGTERM to one shutdown
//! signal (and, for the commands that serve TLS, SIGHUP to a certificate reload), and run the
//! chosen subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mqtt2xmpp::cli::{AskArgs, Cli, Command, ServerArgs, UserAction, UserArgs};
use mqtt2xmpp::secret::{self, Secret};
use mqtt2xmpp::{ask, bridge, config, server, simulate, up};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message before
/// it already contains (many errors show their source's text themselves, and keep it as their
/// source too).
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bridge(args) => {
            let config = config::bridge(&args)?;
            let shutdown = stop_on_signal();
            bridge::run(config, shutdown)
                .await
                .map_err(config::bridge_error)?;
            Ok(())
        }
        Command::Ask(args) => run_ask(args).await,
        Command::Server(args) => run_server(args).await,
        Command::User(args) => run_user(args),
        Command::Up(args) => {
            let mut config = config::up(&args)?;
            config.reload = Some(reload_on_hangup()?);
            let shutdown = stop_on_signal();
            up::run(config, shutdown).await?;
            Ok(())
        }
        Command::Simulate(args) => {
            let config = config::simulate(&args)?;
            let shutdown = stop_on_signal();
            simulate::run(config, shutdown)
                .await
                .map_err(config::simulate_error)?;
            Ok(())
        }
    }
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = config::server(&args);
    config.components = config::components(&args.components, &args.domain)?;
    let starttls = listen(args.listen, "--listen").await?;
    let direct_tls = match args.listen_tls {
        Some(address) => Some(listen(address, "--listen-tls").await?),
        None => None,
    };
    let http = match args.upload.http_listen {
        Some(address) => Some(listen(address, "--http-listen").await?),
        None => None,
    };
    config.reload = Some(reload_on_hangup()?);
    let shutdown = stop_on_signal();
    let listeners = server::Listeners {
        starttls,
        direct_tls,
        http,
    };
    server::run(config, listeners, shutdown, None).await?;
    Ok(())
}

async fn listen(
    address: std::net::SocketAddr,
    flag: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (change it with {flag})"))
}

fn run_user(args: UserArgs) -> anyhow::Result<()> {
    let db = server::database_path(&args.data.data_dir);
    let password = |file: Option<&std::path::Path>| -> anyhow::Result<Secret> {
        match file {
            Some(path) => Ok(secret::read_file(path)?),
            None => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                let line = line.trim_end_matches(['\r', '\n']);
                anyhow::ensure!(
                    !line.is_empty(),
                    "no password given on standard input (or use --password-file)"
                );
                Ok(Secret::new(line))
            }
        }
    };
    if !matches!(args.action, UserAction::List) {
        std::fs::create_dir_all(&args.data.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                args.data.data_dir.display()
            )
        })?;
    }
    match args.action {
        UserAction::Add { jid, password_file } => {
            server::admin::add(&db, &jid, &password(password_file.as_deref())?)?;
            eprintln!("created {jid}");
        }
        UserAction::Passwd { jid, password_file } => {
            server::admin::passwd(&db, &jid, &password(password_file.as_deref())?)?;
            eprintln!("changed the password of {jid}");
        }
        UserAction::Del { jid } => {
            server::admin::del(&db, &jid)?;
            eprintln!("deleted {jid}");
        }
        UserAction::List => {
            for user in server::admin::list(&db)? {
                println!("{user}");
            }
        }
    }
    Ok(())
}

async fn run_ask(args: AskArgs) -> anyhow::Result<()> {
    let (jid, connector) = config::xmpp_login(&args.xmpp)?;
    let to = args
        .to
        .parse()
        .with_context(|| format!("--to {:?} is not a valid JID", args.to))?;
    let answers = ask::run(ask::AskConfig {
        jid,
        connector,
        to,
        message: args.message,
        timeout: args.timeout,
        count: args.count,
    })
    .await
    .map_err(config::ask_error)?;
    if let Some(last) = answers.last() {
        println!("{}", last.body);
    }
    if let (true, Some((median, p90, max))) = (args.count > 1, ask::latency_summary(&answers)) {
        eprintln!(
            "{} asks: median {median:.2?}, p90 {p90:.2?}, max {max:.2?}",
            answers.len()
        );
    }
    Ok(())
}

/// First SIGINT or SIGTERM: graceful shutdown. A second one: exit at once.
fn stop_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    shutdown
}

async fn watch_signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    let name = next_signal(&mut term).await;
    tracing::info!("{name} received: shutting down (send it again to stop at once)");
    shutdown.cancel();
    let name = next_signal(&mut term).await;
    tracing::warn!("{name} received again: exiting now");
    std::process::exit(130);
}

async fn next_signal(term: &mut tokio::signal::unix::Signal) -> &'static str {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Each SIGHUP notifies the returned trigger (the server then reloads its certificate). The
/// handler is in place when this returns, so a SIGHUP no longer ends the process.
fn reload_on_hangup() -> anyhow::Result<Arc<Notify>> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let reload = Arc::new(Notify::new());
    let trigger = reload.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the TLS certificate");
            trigger.notify_one();
        }
    });
    Ok(reload)
}

/// Logs to stderr: `RUST_LOG` if set, else info (debug with -v, trace with -vv) for this crate
/// and warnings for libraries; colours only on a terminal.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,mqtt2xmpp=info",
        1 => "info,mqtt2xmpp=debug",
        _ => "debug,mqtt2xmpp=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
