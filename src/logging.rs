//! Starts `tracing`: readable text or one JSON object a line on stderr, filtered by `-v`/`-q` or
//! `RUST_LOG`, and the progress bar's layer (issue 7).
//!
//! Log lines go through tracing-indicatif's stderr writer, which lifts the bar while a line is
//! written, so lines print above the bar and never through it. The bar's layer sees only spans
//! that ask for a bar (`BAR_FIELD`); the log filter does not apply to it, so `-q` or
//! `RUST_LOG=off` quiet the logs without hiding the bar (indicatif #702).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_indicatif::IndicatifLayer;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};
use crate::output::progress::BAR_FIELD;

/// The format chosen at [`init`]; text until then (tests that run in process log nothing).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The log format on stderr: what is written there besides the logs (the summary, a fatal
/// error) follows it, so that `--log-format json` output is JSON on every line.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// Reports the error that ends the process: `graph-remediate: ...` as text, or one JSON object.
/// Written straight to stderr, not through the log filter: `-q` or `RUST_LOG=off` must not hide
/// why the process failed.
pub fn report_fatal(error: &anyhow::Error) {
    let message = format!("{error:#}");
    match format() {
        LogFormat::Text => eprintln!("graph-remediate: {message}"),
        LogFormat::Json => {
            let fields = serde_json::json!({ "error": message });
            eprintln!("{}", json_line("ERROR", "graph-remediate stopped", &fields));
        }
    }
}

/// One line shaped like the JSON log events (`timestamp`, `level`, `message`, then the keys of
/// `fields`, an object, in its own order), for what is written to stderr outside `tracing`.
pub fn json_line(level: &str, message: &str, fields: &impl serde::Serialize) -> String {
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut line = format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{}",
        quoted(&now),
        quoted(level),
        quoted(message)
    );
    // Spliced as text rather than merged into a map, which would sort the keys.
    let fields = serde_json::to_string(fields).unwrap_or_default();
    if let Some(inner) = fields.strip_prefix('{').and_then(|f| f.strip_suffix('}'))
        && !inner.is_empty()
    {
        line.push(',');
        line.push_str(inner);
    }
    line.push('}');
    line
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(config: &LogConfig) {
    let _ = FORMAT.set(config.format);
    let level = config.level.as_str();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("graph_remediate={level},warn")));
    let progress = IndicatifLayer::new();
    let writer = progress.get_stderr_writer();
    let logs = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            // Colour only for a person at a terminal: piped, logged or captured stderr gets
            // plain text, no escape codes (and NO_COLOR is honoured, https://no-color.org).
            .with_ansi(colour_on_stderr())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_target(false)
            .with_ansi(false)
            .boxed(),
    };
    // Decided per call site, once (filter_fn results are cached), so a row's events pay nothing
    // for the bar's layer.
    let bars_only = filter_fn(|meta| meta.is_span() && meta.fields().field(BAR_FIELD).is_some())
        .with_max_level_hint(LevelFilter::INFO);
    let result = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(progress.with_filter(bars_only))
        .try_init();
    // A second init (tests calling main twice) keeps the first subscriber; nothing to do.
    drop(result);
}

fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_leads_with_the_log_keys_and_keeps_the_fields_order() {
        #[derive(serde::Serialize)]
        struct Fields {
            zebra: u8,
            alpha: &'static str,
        }
        let line = json_line(
            "INFO",
            "run \"summary\"",
            &Fields {
                zebra: 1,
                alpha: "a",
            },
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["message"], "run \"summary\"");
        assert_eq!(value["level"], "INFO");
        let order: Vec<usize> = [
            "\"timestamp\"",
            "\"level\"",
            "\"message\"",
            "\"zebra\"",
            "\"alpha\"",
        ]
        .iter()
        .map(|key| line.find(key).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{line}");
        let empty = json_line("ERROR", "m", &serde_json::json!({}));
        assert!(
            serde_json::from_str::<serde_json::Value>(&empty).is_ok(),
            "{empty}"
        );
    }
}
