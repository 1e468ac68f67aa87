//! The `graph-remediate` binary: parse the command line, start logging and the runtime, run,
//! map the result to an exit code. Signals are turned into the shutdown future here, and a
//! second one ends the process.

use std::process::ExitCode;

use graph_remediate::cli::Cli;
use graph_remediate::{ExitStatus, eprint_above};

fn main() -> ExitCode {
    let cli = Cli::parse_env();
    graph_remediate::logging::init(&graph_remediate::config::LogConfig::from(&cli.log));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let (first_signal_tx, first_signal_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        // The sender is only dropped with the signal listener, which outlives the command.
        let _ = first_signal_rx.await;
    };
    let mut command = Box::pin(graph_remediate::execute(cli.command, shutdown));
    let finished = runtime.block_on(async {
        tokio::select! {
            result = &mut command => Some(result),
            () = signals(first_signal_tx) => None,
        }
    });
    let result = match finished {
        Some(result) => result,
        None => {
            // Aborted: whatever the command holds is left as it is, as if the process had
            // been killed (its records and in-flight notes are on disk for `--resume`).
            std::mem::forget(command);
            runtime.shutdown_background();
            return ExitCode::from(ExitStatus::Interrupted.code());
        }
    };
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

/// The first Ctrl-C or SIGTERM tells the command to stop (no new rows start); the second
/// returns, and `main` then ends the process at once (exit 130) instead of a task calling
/// `process::exit`.
async fn signals(first_signal_tx: tokio::sync::oneshot::Sender<()>) {
    signal().await;
    // Above the progress bar, if one is drawn, rather than through it.
    eprint_above(
        "graph-remediate: stopping: no new rows start; requests in flight finish (Ctrl-C again to abort)\n",
    );
    let _ = first_signal_tx.send(());
    signal().await;
    eprint_above("graph-remediate: aborted\n");
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
