//! The files a run reads and writes, checked before any of them is touched: no two may be the
//! same file (by any spelling, link or hard link), and every directory written to must exist
//! (issue 10). A run that would write its undo file over its results, or its results over its
//! input, is refused with nothing sent and nothing changed.
//!
//! It also owns the rule that no command replaces a run's record (issue 16): a file to write
//! that is a run's results, lock file, identity snapshot, in-flight log or input is refused
//! ([`check_not_a_record`]), found by inode from the lock files nearby and by what the file
//! holds; any other existing file is replaced only when the operator says so (`--replace`).
//! Files beside the results are read with [`open_regular`]: never through a FIFO that would
//! block for ever, and (with [`read_head`]) never more than a bound.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::journal::InflightLog;
use super::lock::RunState;
pub use crate::units::Existing;

/// A file a run uses, with the role that names it in messages.
#[derive(Debug, Clone)]
pub struct NamedPath<'a> {
    pub role: &'static str,
    pub path: &'a Path,
}

/// How a path is told apart from another: the file's device and inode when it exists, else the
/// canonical path of its directory joined with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

fn identity(path: &Path) -> io::Result<Identity> {
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        return Ok(Identity::Inode(metadata.dev(), metadata.ino()));
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let dir = parent_dir(path);
    Ok(Identity::Path(dir.canonicalize()?.join(name)))
}

/// The directory a path's file is in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses when two of `files` are the same file, or when the directory of a file to write is
/// missing. `reads` are only read (the input), `writes` are written.
pub fn check_files(reads: &[NamedPath<'_>], writes: &[NamedPath<'_>]) -> Result<(), String> {
    for file in reads {
        std::fs::metadata(file.path)
            .map_err(|e| format!("cannot read the {} {}: {e}", file.role, file.path.display()))?;
    }
    for file in writes {
        let dir = parent_dir(file.path);
        if !dir.is_dir() {
            return Err(format!(
                "the directory of the {} {} does not exist; create it or choose another path",
                file.role,
                file.path.display()
            ));
        }
        // What is there already must be a file the run may replace: never a directory, and
        // never a link, which the run would not write through (issue 10).
        if let Ok(metadata) = std::fs::symlink_metadata(file.path) {
            let kind = metadata.file_type();
            let wrong = if kind.is_dir() {
                Some("a directory")
            } else if kind.is_symlink() {
                Some("a symbolic link (the tool does not write through links)")
            } else if !kind.is_file() {
                Some("not a regular file")
            } else {
                None
            };
            if let Some(wrong) = wrong {
                return Err(format!(
                    "the {} {} is {wrong}; give the path of a file",
                    file.role,
                    file.path.display()
                ));
            }
        }
    }
    let mut seen: Vec<(Identity, &NamedPath<'_>)> = Vec::new();
    for file in reads.iter().chain(writes) {
        let id = identity(file.path)
            .map_err(|e| format!("cannot use the {} {}: {e}", file.role, file.path.display()))?;
        if let Some((_, first)) = seen.iter().find(|(other, _)| *other == id) {
            return Err(format!(
                "the {} {} and the {} {} are the same file; give each its own path. Nothing was sent or changed",
                first.role,
                first.path.display(),
                file.role,
                file.path.display()
            ));
        }
        seen.push((id, file));
    }
    Ok(())
}

/// The most bytes read from the head of a file to tell what it holds, and from a lock file.
pub const HEAD_BYTES: u64 = 64 * 1024;
/// The most directory entries looked at, and lock files read, when searching for runs nearby.
const MAX_ENTRIES: usize = 100_000;
const MAX_LOCKS: usize = 1_000;

/// Opens the regular file at `path` for reading without blocking and without following a link:
/// a FIFO in its place would otherwise wait for a writer for ever (issue 16). `Ok(None)` when
/// nothing is there; an error naming what is there when it is not a regular file.
pub fn open_regular(path: &Path) -> io::Result<Option<File>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        #[cfg(unix)]
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::other("a symbolic link, not a file"));
        }
        Err(error) => return Err(error),
    };
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        Ok(Some(file))
    } else if kind.is_dir() {
        Err(io::Error::other("a directory, not a file"))
    } else {
        Err(io::Error::other(
            "not a regular file (a FIFO, socket or device)",
        ))
    }
}

/// The first `limit` bytes of the regular file at `path` ([`open_regular`]), and whether the file
/// holds more. `Ok(None)` when nothing is there.
pub fn read_head(path: &Path, limit: u64) -> io::Result<Option<(Vec<u8>, bool)>> {
    let Some(file) = open_regular(path)? else {
        return Ok(None);
    };
    let mut head = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut head)?;
    let more = head.len() as u64 > limit;
    head.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Some((head, more)))
}

/// Refuses `file` (to be written) when it is a run's record: a results file, a lock file, an
/// identity snapshot, an in-flight log, or the input a run's lock file names. Runs are found by
/// the lock files in the file's directory, in `search` (the results' directory for `report`, the
/// working directory), compared by device and inode; and by what the file holds. Any other
/// existing file is refused unless `existing` is [`Existing::Replace`]; `own` lists files the
/// command may replace as its own (a resumed run's undo file). Nothing there is fine.
pub fn check_not_a_record(
    file: &NamedPath<'_>,
    existing: Existing,
    search: &[&Path],
    own: &[&Path],
) -> Result<(), String> {
    let Ok(metadata) = std::fs::metadata(file.path) else {
        return Ok(());
    };
    let refuse = |what: String| {
        format!(
            "the {} {} is {what}; no command replaces a run's record: choose another path. Nothing was sent or written",
            file.role,
            file.path.display()
        )
    };
    let target = inode_of(&metadata);
    let mut dirs: Vec<PathBuf> = vec![parent_dir(file.path).to_path_buf()];
    dirs.extend(search.iter().map(|d| d.to_path_buf()));
    if let Some(what) = record_nearby(target, &dirs) {
        return Err(refuse(what));
    }
    if let Some(what) = record_by_content(file.path) {
        return Err(refuse(what));
    }
    let is_own = own
        .iter()
        .any(|path| std::fs::metadata(path).is_ok_and(|m| inode_of(&m) == target));
    match existing {
        Existing::Replace => Ok(()),
        Existing::Refuse if is_own => Ok(()),
        Existing::Refuse => Err(format!(
            "the {} {} exists already; pass --replace to replace it, or choose another path. Nothing was sent or written",
            file.role,
            file.path.display()
        )),
    }
}

/// A file's device and inode (its path elsewhere, where there are no inodes).
#[cfg(unix)]
fn inode_of(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

#[cfg(not(unix))]
fn inode_of(metadata: &std::fs::Metadata) -> (u64, u64) {
    (metadata.len(), 0)
}

fn same_file(path: &Path, target: (u64, u64)) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && inode_of(&m) == target)
}

/// Which record of a run found by its lock file in `dirs` the file `target` is, in words.
fn record_nearby(target: (u64, u64), dirs: &[PathBuf]) -> Option<String> {
    let mut locks_read = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.take(MAX_ENTRIES).flatten() {
            let name = entry.file_name();
            let Some(results_name) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            if results_name.is_empty() || locks_read == MAX_LOCKS {
                continue;
            }
            locks_read += 1;
            let lock = entry.path();
            let results = dir.join(results_name);
            let shown = lock.display();
            let candidates = [
                (
                    results.clone(),
                    format!("the results file of the run whose lock is {shown}"),
                ),
                (lock.clone(), "a run's lock file".to_owned()),
                (
                    InflightLog::path_for(&results),
                    format!("the in-flight log of the run whose lock is {shown}"),
                ),
                (
                    super::snapshot::path_for(&results),
                    format!("the identity snapshot of the run whose lock is {shown}"),
                ),
            ];
            for (path, what) in candidates {
                if same_file(&path, target) {
                    return Some(what);
                }
            }
            let Some(state) = read_head(&lock, HEAD_BYTES)
                .ok()
                .flatten()
                .and_then(|(head, _)| serde_json::from_slice::<RunState>(head.trim_ascii()).ok())
            else {
                continue;
            };
            // The input as the run named it (relative to where it was started, often here),
            // and beside the results.
            let named = PathBuf::from(&state.input);
            let beside = named.file_name().map(|n| dir.join(n));
            if same_file(&named, target) || beside.is_some_and(|b| same_file(&b, target)) {
                return Some(format!("the input of the run whose lock is {shown}"));
            }
        }
    }
    None
}

/// What the head of the file at `path` says it is, when it is a run's record.
fn record_by_content(path: &Path) -> Option<String> {
    let (head, _) = read_head(path, HEAD_BYTES).ok().flatten()?;
    let first = head
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .find(|line| !line.is_empty())?;
    if let Ok(object) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(first)
    {
        let has = |key: &str| object.contains_key(key);
        return if has("row") && has("status") {
            Some("a run's results file (its first record says so)".to_owned())
        } else if has("pid") && has("inputFingerprint") {
            Some("a run's lock file (it holds a run's state)".to_owned())
        } else if has("identityAccountId") && has("readAt") && has("identity") {
            Some("a run's identity snapshot (its first line says so)".to_owned())
        } else if has("clientRequestId") && has("attempt") {
            Some("a run's in-flight log (its first line says so)".to_owned())
        } else {
            None
        };
    }
    // A CSV results file: a header with the results' row and status columns.
    let header = std::str::from_utf8(first).ok()?;
    let columns: Vec<&str> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    (columns.contains(&"row") && columns.contains(&"status") && columns.contains(&"errorCode"))
        .then(|| "a run's results file (its header says so)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'a>(role: &'static str, path: &'a Path) -> NamedPath<'a> {
        NamedPath { role, path }
    }

    #[test]
    fn the_same_file_is_found_by_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "x").unwrap();
        let results = dir.path().join("out.jsonl");
        let spelled_otherwise = dir.path().join(".").join("out.jsonl");
        let error = check_files(
            &[named("input", &input)],
            &[
                named("results file", &results),
                named("undo file", &spelled_otherwise),
            ],
        )
        .unwrap_err();
        assert!(
            error.contains("results file") && error.contains("undo file"),
            "{error}"
        );
        assert!(
            check_files(
                &[named("input", &input)],
                &[named("results file", &results)]
            )
            .is_ok()
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_and_hard_links_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "x").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard.jsonl");
        std::fs::hard_link(&input, &hard).unwrap();
        for alias in [&link, &hard] {
            assert!(
                check_files(&[named("input", &input)], &[named("results file", alias)]).is_err(),
                "{}",
                alias.display()
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn directories_and_links_where_a_file_goes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a_dir = dir.path().join("summary.json");
        std::fs::create_dir(&a_dir).unwrap();
        let error = check_files(&[], &[named("summary file", &a_dir)]).unwrap_err();
        assert!(error.contains("is a directory"), "{error}");
        let link = dir.path().join("undo.csv");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        let error = check_files(&[], &[named("undo file", &link)]).unwrap_err();
        assert!(error.contains("symbolic link"), "{error}");
    }

    #[test]
    fn a_missing_input_is_named_before_any_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("nope").join("in.csv");
        let results = dir.path().join("nope").join("in.results.jsonl");
        let error = check_files(
            &[named("input", &input)],
            &[named("results file", &results)],
        )
        .unwrap_err();
        assert!(error.starts_with("cannot read the input"), "{error}");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("summary.json");
        let error = check_files(&[], &[named("summary file", &missing)]).unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn issue_16_a_fifo_beside_the_results_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("r.jsonl.lock");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = read_head(&fifo, HEAD_BYTES).unwrap_err();
        assert!(error.to_string().contains("FIFO"), "{error}");
        assert!(read_head(&dir.path().join("none"), 1).unwrap().is_none());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100]).unwrap();
        let (head, more) = read_head(&big, 10).unwrap().unwrap();
        assert_eq!((head.len(), more), (10, true));
    }

    #[cfg(unix)]
    #[test]
    fn issue_16_a_runs_input_is_found_by_inode_from_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("accounts.csv");
        std::fs::write(&input, "upn\nann@contoso.com\n").unwrap();
        let lock = dir.path().join("accounts.results.jsonl.lock");
        let state =
            serde_json::json!({"pid": 1, "input": input, "inputFingerprint": "x", "rows": 1});
        std::fs::write(&lock, state.to_string()).unwrap();
        // The input under another name in another directory: a hard link.
        let elsewhere = tempfile::tempdir().unwrap();
        let alias = elsewhere.path().join("undo.csv");
        std::fs::hard_link(&input, &alias).unwrap();
        let search = [dir.path()];
        for (path, why) in [
            (&input, "the input of the run"),
            (&alias, "the input of the run"),
            (&lock, "lock file"),
        ] {
            let file = named("undo file", path);
            let error = check_not_a_record(&file, Existing::Replace, &search, &[]).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        // An ordinary file: refused unless replaced, or the command's own.
        let other = elsewhere.path().join("notes.csv");
        std::fs::write(&other, "x").unwrap();
        let file = named("undo file", &other);
        assert!(
            check_not_a_record(&file, Existing::Refuse, &search, &[])
                .unwrap_err()
                .contains("--replace")
        );
        assert!(check_not_a_record(&file, Existing::Replace, &search, &[]).is_ok());
        assert!(check_not_a_record(&file, Existing::Refuse, &search, &[&other]).is_ok());
        let missing = elsewhere.path().join("new.csv");
        assert!(
            check_not_a_record(
                &named("undo file", &missing),
                Existing::Refuse,
                &search,
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn issue_16_records_are_known_by_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, why) in [
            (
                "a.jsonl",
                "\n{\"row\":2,\"status\":\"succeeded\"}\n",
                "results",
            ),
            (
                "b.csv",
                "correlationId,row,identityAccountId,accountId,action,identityProvider,status,httpStatus,attempts,errorCode\r\n",
                "results",
            ),
            (
                "c.jsonl",
                "{\"identityAccountId\":\"x\",\"readAt\":\"t\",\"identity\":{}}\n",
                "snapshot",
            ),
            (
                "d.txt",
                "{\"identityAccountId\":\"x\",\"clientRequestId\":\"c\",\"attempt\":1}\n",
                "in-flight",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let error =
                check_not_a_record(&named("report (-o)", &path), Existing::Replace, &[], &[])
                    .unwrap_err();
            assert!(error.contains(why), "{name}: {error}");
        }
        let undo = dir.path().join("undo.csv");
        std::fs::write(
            &undo,
            "identityAccountId,accountId,action,identityProvider\r\nx,y,enable,okta\r\n",
        )
        .unwrap();
        assert!(
            check_not_a_record(&named("undo file", &undo), Existing::Replace, &[], &[]).is_ok()
        );
    }
}
