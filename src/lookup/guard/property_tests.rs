//! Property tests (issue 16): whatever a protect file holds (arbitrary bytes, hostile UPNs,
//! invisible and look-alike characters, escape sequences), reading it never panics, and no
//! message it leads to holds a control character, a bidirectional override or an invisible one.

use proptest::prelude::*;

use super::*;

/// Whether `text` is safe to print: no control character (an escape sequence starts with one)
/// and no bidirectional override.
fn printable_only(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// Pieces of protect files: entries, comments, sections, and what breaks parsers and printers.
fn pieces() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"user@contoso.com".to_vec()),
        Just(b"guest_fabrikam.com#EXT#@contoso.onmicrosoft.com".to_vec()),
        Just(b"S-1-5-21-1-2-3-500".to_vec()),
        Just(b"0f5c5bd0-7b48-4d5a-9b3f-4d2f3e0c1a11".to_vec()),
        Just(b"[allow]".to_vec()),
        Just(b"[protect]".to_vec()),
        Just(b"[".to_vec()),
        Just(b" # comment".to_vec()),
        Just(b"#".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\x1b[31m".to_vec()),
        Just("\u{9b}2J".as_bytes().to_vec()),
        Just("\u{200b}".as_bytes().to_vec()),
        Just("\u{feff}".as_bytes().to_vec()),
        Just("\u{202e}".as_bytes().to_vec()),
        Just("\u{2066}".as_bytes().to_vec()),
        Just("\u{0430}".as_bytes().to_vec()),
        Just("\u{e9}".as_bytes().to_vec()),
        Just(b"mailto:".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"S-1-".to_vec()),
        Just(b"@".to_vec()),
        Just(b".".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..32).prop_map(|pieces| pieces.concat())
}

/// Every message the parsed file can lead to: its error, or each entry as the guard shows it.
fn messages(name: &str, bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join(format!("protect{name}.txt"));
    std::fs::write(&path, bytes).expect("written");
    match ProtectList::load(&path) {
        Err(error) => vec![error.to_string()],
        Ok(list) => {
            let entries: Vec<&ProtectEntry> = list.protected.iter().chain(&list.allowed).collect();
            let mut shown: Vec<String> = entries.iter().map(|entry| shown_entry(entry)).collect();
            // As a run that finds them stale says it, and as the plan names the file.
            let stale = entries
                .iter()
                .map(|entry| format!("{} ({})", shown_entry(entry), stale_hint(entry)))
                .collect::<Vec<_>>()
                .join("; ");
            shown.push(LookupStop::StaleProtectEntries(stale).to_string());
            let rails = Guardrails {
                protect: Some(list),
                ..Guardrails::default()
            };
            shown.extend(rails.in_force());
            shown
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn issue_16_any_protect_file_parses_or_is_refused_without_panic_or_escapes(
        name in "[a-z\u{1b}\u{9b}\u{7}\r\n\u{202e}\u{200b}\\[]{0,6}",
        bytes in pieces(),
    ) {
        for message in messages(&name, &bytes) {
            prop_assert!(printable_only(&message), "{message:?}");
        }
    }

    #[test]
    fn issue_16_arbitrary_text_never_panics_the_parser(text in any::<String>()) {
        match ProtectList::parse(&text, "p.txt") {
            Err(error) => prop_assert!(printable_only(&error.to_string()), "{error}"),
            Ok(list) => {
                for entry in list.protected.iter().chain(&list.allowed) {
                    prop_assert!(printable_only(&shown_entry(entry)));
                }
            }
        }
    }
}
