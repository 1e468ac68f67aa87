//! The report as one self-contained HTML page, to attach to an incident ticket or open in a
//! browser: inline CSS only; no script, font, image or link that loads anything (a
//! Content-Security-Policy of `default-src 'none'` says so to the browser as well); status
//! coloured by CSS class.
//!
//! The page is written with maud, whose templates escape every value they insert: a value from
//! the results or the snapshot cannot become markup, whatever it holds. Control characters are
//! shown escaped and tokens hidden ([`shown`]) first, as in the Markdown.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{Report, shown};

/// The page's only style, inline.
const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem;\
color:#1f2328;background:#fff}\
h1{font-size:1.6rem;margin:0 0 1rem}\
h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}\
h3{font-size:1rem;margin:1.2rem 0 .4rem}\
table{border-collapse:collapse;margin:.4rem 0}\
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}\
tbody tr:nth-child(even){background:#fafbfc}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
td.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;\
word-break:break-all;min-width:9rem}\
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.2rem 1.2rem;margin:0}\
dl.facts dt{font-weight:600}dl.facts dd{margin:0;word-break:break-word}\
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:.6rem;white-space:pre-wrap;\
word-break:break-all}\
.banner{background:#ddf4ff;border:1px solid #54aeff;padding:.5rem .8rem;font-weight:600}\
.missing{background:#fff8c5;border:1px solid #d4a72c;padding:.4rem .8rem .4rem 2rem}\
.status{font-weight:600;white-space:nowrap}\
.succeeded{color:#1a7f37}.failed{color:#cf222e}.skipped{color:#57606a}\
.not_attempted{color:#9a6700}\
@media print{body{margin:0}}";

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let title = text(&report.title());
    let counts = &report.counts;
    let (undo_sentence, undo_command) = report.undo_steps();
    let missing = report.missing();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy"
                    content="default-src 'none'; style-src 'unsafe-inline'";
                meta name="referrer" content="no-referrer";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                @if report.is_rehearsal() {
                    p.banner { "Rehearsal against the built-in mock: nothing was sent to Microsoft." }
                }

                h2 { "The run" }
                dl.facts {
                    @for (name, value) in report.facts() {
                        dt { (name) }
                        dd { (text(&value)) }
                    }
                }
                @if let Some(command) = report.command_line() {
                    p { "Command line:" }
                    pre { code { (text(command)) } }
                }
                @if !missing.is_empty() {
                    p { "Not in this report:" }
                    ul.missing {
                        @for note in &missing { li { (text(note)) } }
                    }
                }

                h2 { "Counts" }
                table #counts {
                    thead { tr { th { "Status" } th { "Rows" } } }
                    tbody {
                        @for (status, count) in [
                            ("succeeded", counts.succeeded),
                            ("failed", counts.failed),
                            ("skipped", counts.skipped),
                            ("not_attempted", counts.not_attempted),
                        ] {
                            tr { td.status.(status) { (status) } td.num { (count) } }
                        }
                        tr { th { "total" } td.num { strong { (counts.rows()) } } }
                    }
                }
                @if let Some(people) = report.people() {
                    p #people { "People: " (people) "." }
                }
                @if let Some(effects) = &report.effects {
                    p { "Effect of the succeeded rows' actions, as read back after them (confirmed: the identity's state shows it; notConfirmed: it did not show in time; notObservable: Graph shows nothing of it):" }
                    table #effects {
                        thead { tr { th { "Effect" } th { "Rows" } } }
                        tbody {
                            @for (effect, count) in super::markdown::effect_rows(effects) {
                                tr { td { (effect) } td.num { (count) } }
                            }
                        }
                    }
                }

                h2 { "Rows" }
                @if report.rows.is_empty() {
                    p { "The results hold no row." }
                } @else {
                    table #rows {
                        thead {
                            tr {
                                th { "Line" } th { "Person" } th { "Action" } th { "Provider" }
                                th { "Status" }
                                @if report.effects.is_some() { th { "Effect" } }
                                th { "Error" } th { "correlationId" }
                                th { "requestId" } th { "Before" }
                            }
                        }
                        tbody {
                            @for row in &report.rows {
                                tr {
                                    td.num { (row.line) }
                                    td { (text(&row.person())) }
                                    td { (text(&row.action)) }
                                    td { (text(&row.provider)) }
                                    td.status.(row.status.as_str()) { (row.status.as_str()) }
                                    @if report.effects.is_some() { td { (text(&row.effect)) } }
                                    td { (text(&row.error_code)) }
                                    td.id { (text(&row.correlation_id)) }
                                    td.id { (text(&row.request_id)) }
                                    td { (text(&row.before_text())) }
                                }
                            }
                        }
                    }
                }
                @if let Some(note) = report.rows_cut() {
                    p { (text(&note)) }
                }

                h2 { "Failures" }
                @if report.failures.is_empty() {
                    p { "No row failed." }
                }
                @for group in &report.failures {
                    h3 {
                        span.failed { (text(&group.code)) }
                        " (" (group.count) " row" @if group.count != 1 { "s" } ")"
                    }
                    ul {
                        li { "Lines: " (group.lines.text()) }
                        @if !group.example.is_empty() {
                            li { "For example: " (text(&group.example)) }
                        }
                        li {
                            "What to do: "
                            (group.hint.unwrap_or("no advice for this code: errorCode and errorMessage in the results say why."))
                        }
                    }
                }
                @if let Some(note) = report.failures_cut() {
                    p { (text(&note)) }
                }
                @if !report.not_attempted.is_empty() {
                    h3 { span.not_attempted { "Not attempted" } " (" (counts.not_attempted) ")" }
                    ul {
                        li {
                            "Lines: " (report.not_attempted.text())
                            " (the run stopped before sending them)"
                        }
                    }
                }
                @if let Some(command) = report.rest_command() {
                    p {
                        "Once the causes are fixed, send the failed and not-attempted rows again "
                        "(rows that succeeded are skipped):"
                    }
                    pre { code { (text(&command)) } }
                }

                h2 { "Undo" }
                p { (text(&undo_sentence)) }
                @if let Some(command) = undo_command {
                    pre { code { (text(&command)) } }
                }
            }
        }
    };
    page.into_string()
}

/// A value for the page: control characters shown escaped, tokens hidden; maud escapes the rest.
fn text(value: &str) -> Markup {
    html! { (shown(value)) }
}
