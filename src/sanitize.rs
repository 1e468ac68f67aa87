//! Text from outside (a server's error body, a header, a token endpoint's description) made safe
//! to print, log and record: control characters and bidirectional overrides escaped, length
//! bounded, and any secret we sent scrubbed out in every encoding a server might echo it in
//! (issue 10). Pure functions; no I/O.

use std::borrow::Cow;
use std::fmt::Write as _;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// The most characters of outside text kept; Graph's messages are a sentence or two.
pub const MAX_OUTSIDE_TEXT: usize = 1000;

/// `text` with every control character (C0, DEL, C1) and every bidirectional override escaped as
/// `\u{..}`, so that nothing a server sends can move the cursor, recolour or rewrite a terminal,
/// and cut to [`MAX_OUTSIDE_TEXT`] characters.
pub fn printable(text: &str) -> Cow<'_, str> {
    let clean = text.chars().all(|c| !needs_escape(c));
    if clean && text.chars().nth(MAX_OUTSIDE_TEXT).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_OUTSIDE_TEXT * 2));
    for (index, c) in text.chars().enumerate() {
        if index == MAX_OUTSIDE_TEXT {
            out.push('…');
            break;
        }
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`], owned.
pub fn printable_owned(text: &str) -> String {
    printable(text).into_owned()
}

/// `text` with every control character and bidirectional override escaped as in [`printable`],
/// but never cut: for cells of a file written for people (`resolve`'s output, the undo file),
/// where the whole value must stay (issue 16).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if text.chars().all(|c| !needs_escape(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether a spreadsheet would run `cell` as a formula: it starts with `=`, `+`, `-`, `@`, tab or
/// CR (OWASP's CSV-injection guidance).
pub fn is_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// `cell` as a CSV file for people holds it: a formula gets a `'` first, which a spreadsheet
/// shows as text and [`unquote_formula`] takes off again when the tool reads the file back.
pub fn quote_formula(cell: &str) -> Cow<'_, str> {
    if is_formula(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Undoes [`quote_formula`]: a `'` before a formula-like cell is the tool's (or a spreadsheet's
/// own text marker), never part of an id, so reading it back gives the value as it was (issue
/// 16: `'-dash@contoso.com` is read as `-dash@contoso.com`).
pub fn unquote_formula(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if is_formula(rest) => rest,
        _ => cell,
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with `secret` replaced by `[redacted]` wherever it appears: as sent, form-encoded,
/// percent-encoded (either case of hex digits), JSON-escaped, in base64 (standard or URL-safe,
/// padded or not) or hex, in any case of letters, and in part: any run of [`PART`] or more
/// characters of one of those spellings (issue 16: an endpoint's error echoed half the secret,
/// or its base64). Secrets shorter than four characters are left alone: replacing them would
/// shred ordinary text and hide nothing.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.len() < 4 {
        return text.to_owned();
    }
    // ASCII case folding keeps byte offsets, so ranges found in the folded text fit the text.
    let folded = text.to_ascii_lowercase();
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    for form in encodings(secret) {
        let form = form.to_ascii_lowercase();
        let bounds: Vec<usize> = form
            .char_indices()
            .map(|(at, _)| at)
            .chain([form.len()])
            .collect();
        let chars = bounds.len() - 1;
        let window = PART.min(chars);
        for start in 0..=chars - window {
            let piece = &form[bounds[start]..bounds[start + window]];
            let mut from = 0;
            while let Some(found) = folded[from..].find(piece) {
                let begin = from + found;
                hidden.push((begin, begin + piece.len()));
                from = begin + 1;
                while !folded.is_char_boundary(from) {
                    from += 1;
                }
            }
        }
    }
    if hidden.is_empty() {
        return text.to_owned();
    }
    hidden.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut spans = hidden.into_iter().peekable();
    while let Some((begin, mut end)) = spans.next() {
        // Overlapping or touching pieces are one hidden span.
        while let Some(&(next_begin, next_end)) = spans.peek() {
            if next_begin > end {
                break;
            }
            end = end.max(next_end);
            spans.next();
        }
        if begin >= at {
            out.push_str(&text[at..begin]);
            out.push_str("[redacted]");
            at = end;
        } else if end > at {
            at = end;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// The shortest run of a secret's characters that is hidden on its own: long enough that
/// ordinary text never holds one by chance, short enough to catch a secret echoed in part.
pub const PART: usize = 8;

/// The spellings of `secret` a server could echo back.
fn encodings(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let percent_upper = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned();
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_owned(),
        form,
        percent_upper,
        json,
        hex,
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
    ];
    forms.retain(|f| f.len() >= 4);
    // Longest first, so that a form which contains another is replaced whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bidi_overrides_are_escaped() {
        assert_eq!(printable("plain text"), "plain text");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(printable("x\r\ny\u{7f}"), "x\\u{d}\\u{a}y\\u{7f}");
        assert_eq!(printable("\u{9b}2J"), "\\u{9b}2J", "C1 CSI");
        assert_eq!(printable("abc\u{202e}def"), "abc\\u{202e}def");
    }

    #[test]
    fn issue_16_cells_for_people_are_escaped_whole_and_formulas_round_trip() {
        let name = "Eve\u{1b}[2J\u{7}\r\n\u{202e}gnp.exe";
        assert_eq!(
            escape_controls(name),
            "Eve\\u{1b}[2J\\u{7}\\u{d}\\u{a}\\u{202e}gnp.exe"
        );
        let long = "y".repeat(MAX_OUTSIDE_TEXT * 3);
        assert_eq!(escape_controls(&long), long, "never cut");
        for cell in [
            "-dash@contoso.com",
            "=HYPERLINK(1)",
            "+1",
            "@x",
            "\tx",
            "plain",
            "'quoted",
        ] {
            let quoted = quote_formula(cell);
            assert!(!is_formula(&quoted), "{quoted}");
            assert_eq!(unquote_formula(&quoted), cell);
        }
        assert_eq!(quote_formula("-dash@contoso.com"), "'-dash@contoso.com");
        assert_eq!(
            unquote_formula("'o'brien@contoso.com"),
            "'o'brien@contoso.com"
        );
    }

    #[test]
    fn issue_16_secrets_echoed_in_base64_hex_another_case_or_in_part_are_redacted() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let secret = "Qx7~kP2.vL9_zR4-mN8sT1wY6";
        let hex: String = secret.bytes().map(|b| format!("{b:02X}")).collect();
        for echoed in [
            STANDARD.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            hex.clone(),
            hex.to_ascii_lowercase(),
            secret.to_ascii_uppercase(),
            secret.to_ascii_lowercase(),
            secret[..12].to_owned(),
            secret[9..].to_owned(),
            STANDARD.encode(secret)[4..20].to_owned(),
        ] {
            let text = format!("AADSTS7000215: bad secret '{echoed}' for app");
            let redacted = redact(&text, secret);
            assert_eq!(
                redacted, "AADSTS7000215: bad secret '[redacted]' for app",
                "{echoed}"
            );
        }
        let ordinary = "AADSTS7000215: Invalid client secret provided. Trace ID: 0b1c";
        assert_eq!(
            redact(ordinary, secret),
            ordinary,
            "nothing of it: left alone"
        );
        assert_eq!(
            redact("a Qx7~kP2. b", secret),
            "a [redacted] b",
            "eight characters"
        );
        assert_eq!(
            redact("a Qx7~kP2 b", secret),
            "a Qx7~kP2 b",
            "seven are not enough"
        );
    }

    #[test]
    fn long_outside_text_is_cut() {
        let long = "x".repeat(MAX_OUTSIDE_TEXT + 50);
        let shown = printable(&long);
        assert_eq!(shown.chars().count(), MAX_OUTSIDE_TEXT + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn issue_10_secrets_echoed_in_any_encoding_are_redacted() {
        let secret = "s3cr+t/v@lue=&x";
        for echoed in [
            "s3cr+t/v@lue=&x",
            "s3cr%2Bt%2Fv%40lue%3D%26x",
            "s3cr%2bt%2fv%40lue%3d%26x",
        ] {
            let text = format!("got client_secret={echoed} here");
            let redacted = redact(&text, secret);
            assert_eq!(redacted, "got client_secret=[redacted] here", "{echoed}");
        }
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        assert!(!redact(&format!("x={form}"), secret).contains(&form));
        let json = "{\"echo\":\"a\\\"b\\\\c\"}";
        assert_eq!(redact(json, "a\"b\\c"), "{\"echo\":\"[redacted]\"}");
        assert_eq!(redact("abc", "ab"), "abc", "short secrets are left alone");
    }
}
