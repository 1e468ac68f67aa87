//! The mock's request log: the `LoggedRequest` record, the background task that appends it as
//! JSONL, and the UTC timestamp forms the log and the error bodies need (cut from humantime's
//! RFC 3339).
//!
//! One writer task owns the file; handlers only send into a channel, so no request waits on disk.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// One request as the mock saw and answered it. Serialized camelCase, one JSON object a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    /// Milliseconds since the server started (tokio's monotonic clock).
    pub t_ms: f64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub method: String,
    pub path: String,
    /// The query string as sent (still percent-encoded), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub status: u16,
    /// The parsed JSON body of a Graph call. For the token endpoint only `grantType` and
    /// `clientId`: its form body holds secrets and is never logged.
    pub body: Option<serde_json::Value>,
    /// A stable label per distinct bearer token (`t1`, `t2`, ...), never the token itself.
    pub token: Option<String>,
    pub client_request_id: Option<String>,
    pub request_id: String,
    /// The `Retry-After` header sent, if any.
    pub retry_after: Option<String>,
    /// For a 429: when the told window ends, in the same clock as `t_ms`.
    pub window_end_ms: Option<f64>,
    /// The request came from a token while a window told to it with a 429 was still open.
    pub inside_told_window: bool,
}

pub(crate) enum LogMessage {
    Entry(Box<LoggedRequest>),
    /// Flush, stop, and say so.
    Close(oneshot::Sender<()>),
}

/// How often buffered lines reach the file even when the server is busy.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Opens (truncating) `path` and starts the writer task. Errors opening the file surface here,
/// at startup, rather than being lost in the task.
pub(crate) async fn start_writer(
    path: PathBuf,
) -> std::io::Result<mpsc::UnboundedSender<LogMessage>> {
    let file = tokio::fs::File::create(&path).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create the request log {}: {e}", path.display()),
        )
    })?;
    let (log_tx, log_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_lines(file, log_rx));
    Ok(log_tx)
}

async fn write_lines(file: tokio::fs::File, mut log_rx: mpsc::UnboundedReceiver<LogMessage>) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    let mut failed = false;
    loop {
        tokio::select! {
            message = log_rx.recv() => match message {
                Some(LogMessage::Entry(entry)) => {
                    if failed {
                        continue;
                    }
                    let mut line = match serde_json::to_vec(&entry) {
                        Ok(line) => line,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot serialize a request log line");
                            continue;
                        }
                    };
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line).await {
                        tracing::error!(error = %e, "request log write failed; logging stops");
                        failed = true;
                    }
                    dirty = true;
                }
                Some(LogMessage::Close(done)) => {
                    flush(&mut out, &mut failed).await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    flush(&mut out, &mut failed).await;
                    return;
                }
            },
            _ = ticker.tick(), if dirty => {
                flush(&mut out, &mut failed).await;
                dirty = false;
            }
        }
    }
}

async fn flush(out: &mut tokio::io::BufWriter<tokio::fs::File>, failed: &mut bool) {
    if *failed {
        return;
    }
    if let Err(e) = out.flush().await {
        tracing::error!(error = %e, "request log flush failed; logging stops");
        *failed = true;
    }
}

/// `2025-02-13T10:17:05.123Z` for a time since the Unix epoch.
pub(crate) fn rfc3339_millis(since_epoch: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

/// `2025-02-13T10:17:05`, as in Graph's `innerError.date`: RFC 3339 without the zone.
pub(crate) fn graph_date(since_epoch: Duration) -> String {
    let mut date = rfc3339_seconds(since_epoch);
    date.pop(); // the 'Z'
    date
}

/// `2025-02-13 10:17:05Z`, as in Entra's token error `timestamp`: RFC 3339 with a space.
pub(crate) fn entra_timestamp(since_epoch: Duration) -> String {
    rfc3339_seconds(since_epoch).replacen('T', " ", 1)
}

/// `2025-02-13T10:17:05Z`.
fn rfc3339_seconds(since_epoch: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339_millis(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        // 2023-11-14T22:13:20.400Z
        let t = Duration::from_millis(1_700_000_000_400);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.400Z");
        assert_eq!(graph_date(t), "2023-11-14T22:13:20");
        assert_eq!(entra_timestamp(t), "2023-11-14 22:13:20Z");
        // Milliseconds are cut, not rounded: the log never shows a time that has not come yet.
        let late = Duration::new(1_700_000_000, 400_999_999);
        assert_eq!(rfc3339_millis(late), "2023-11-14T22:13:20.400Z");
        assert_eq!(graph_date(late), "2023-11-14T22:13:20");
        // A leap day.
        let leap = Duration::from_secs(951_782_400 + 86_399); // 2000-02-29T23:59:59Z
        assert_eq!(rfc3339_millis(leap), "2000-02-29T23:59:59.000Z");
        assert_eq!(
            rfc3339_millis(Duration::from_secs(1_709_251_200)),
            "2024-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn agrees_with_httpdate_on_many_days() {
        for day in (0..30_000u64).step_by(97) {
            let t = Duration::from_secs(day * 86_400 + 45_296); // 12:34:56
            let http = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + t);
            let ours = rfc3339_millis(t);
            let (year, rest) = ours.split_at(4);
            let day_of_month = &rest[4..6];
            assert!(http.contains(year), "{http} vs {ours}");
            assert!(
                http.contains(&format!(" {day_of_month} ")),
                "{http} vs {ours}"
            );
            assert!(ours.ends_with("T12:34:56.000Z"));
        }
    }

    #[test]
    fn log_lines_are_camel_case() {
        let entry = LoggedRequest {
            t_ms: 1.5,
            time: "x".into(),
            method: "POST".into(),
            path: "/p".into(),
            query: Some("$filter=x".into()),
            status: 429,
            body: None,
            token: Some("t1".into()),
            client_request_id: None,
            request_id: "r".into(),
            retry_after: Some("1".into()),
            window_end_ms: Some(1001.5),
            inside_told_window: true,
        };
        let line = serde_json::to_string(&entry).unwrap();
        for key in [
            "\"tMs\"",
            "\"clientRequestId\"",
            "\"requestId\"",
            "\"retryAfter\"",
            "\"windowEndMs\"",
            "\"insideToldWindow\"",
        ] {
            assert!(line.contains(key), "{key} missing from {line}");
        }
        let back: LoggedRequest = serde_json::from_str(&line).unwrap();
        assert_eq!(back, entry);
    }
}
