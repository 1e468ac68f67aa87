//! The `graph-remediate` binary: parse the command line, start logging and the runtime, run,
//! map the result to an exit code. Signals are turned into the shutdown future here.

use std::process::ExitCode;

use clap::Parser;

use graph_remediate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    graph_remediate::logging::init(&cli.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(graph_remediate::execute(cli.command, shutdown_signal()));
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => {
            eprintln!("graph-remediate: {error:#}");
            ExitCode::from(graph_remediate::status_of(&error).code())
        }
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; the second one aborts at once (exit 130).
async fn shutdown_signal() {
    signal().await;
    eprintln!(
        "graph-remediate: stopping: no new rows start; requests in flight finish (Ctrl-C again to abort)"
    );
    tokio::spawn(async {
        signal().await;
        eprintln!("graph-remediate: aborted");
        std::process::exit(130);
    });
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
