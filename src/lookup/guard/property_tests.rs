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
fn messages(bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("protect.txt");
    std::fs::write(&path, bytes).expect("written");
    match ProtectList::load(&path) {
        Err(error) => vec![error.to_string()],
        Ok(list) => list
            .protected
            .iter()
            .chain(&list.allowed)
            .map(shown_entry)
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn issue_16_any_protect_file_parses_or_is_refused_without_panic_or_escapes(bytes in pieces()) {
        for message in messages(&bytes) {
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
