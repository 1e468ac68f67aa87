//! The `graph-remediate` binary: parse the command line, start logging and the runtime, run,
//! map the result to an exit code. Signals are turned into the shutdown future here.

use std::process::ExitCode;

use graph_remediate::cli::Cli;
use graph_remediate::eprint_above;

fn main() -> ExitCode {
    let cli = Cli::parse_env();
    graph_remediate::logging::init(&graph_remediate::config::LogConfig::from(&cli.log));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(graph_remediate::execute(cli.command, shutdown_signal()));
    // Everything the run started has finished by now, but a blocking read that a signal cut
    // short (a named pipe nobody writes, the confirmation prompt) cannot be: don't wait for it.
    runtime.shutdown_background();
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => {
            graph_remediate::logging::report_fatal(&error);
            ExitCode::from(graph_remediate::status_of(&error).code())
        }
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; the second one aborts at once (exit 130).
async fn shutdown_signal() {
    signal().await;
    // Above the progress bar, if one is drawn, rather than through it.
    eprint_above(
        "graph-remediate: stopping: no new rows start; requests in flight finish (Ctrl-C again to abort)\n",
    );
    tokio::spawn(async {
        signal().await;
        eprint_above("graph-remediate: aborted\n");
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
