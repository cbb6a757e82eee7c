//! The `mqtt2xmpp` binary: parse flags, set up logging, wire SIGINT/SIGTERM to one shutdown
//! signal, and run the chosen subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mqtt2xmpp::cli::{AskArgs, Cli, Command};
use mqtt2xmpp::shutdown::{self, Trigger};
use mqtt2xmpp::{ask, bridge, config};
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
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bridge(args) => {
            let config = config::bridge(&args)?;
            let (trigger, shutdown) = shutdown::channel();
            tokio::spawn(stop_on_signal(trigger));
            bridge::run(config, shutdown).await?;
            Ok(())
        }
        Command::Ask(args) => run_ask(args).await,
    }
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
    .await?;
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
async fn stop_on_signal(trigger: Trigger) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    let name = next_signal(&mut term).await;
    tracing::info!("{name} received: shutting down (send it again to stop at once)");
    trigger.fire();
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
