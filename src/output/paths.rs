//! The files a run reads and writes, checked before any of them is touched: no two may be the
//! same file (by any spelling, link or hard link), and every directory written to must exist
//! (issue 10). A run that would write its undo file over its results, or its results over its
//! input, is refused with nothing sent and nothing changed.

use std::io;
use std::path::{Path, PathBuf};

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
}
