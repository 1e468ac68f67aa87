//! `<results stem>.identities.jsonl`: every identity the rows were resolved to, as Graph returned
//! it before the first action (SPEC section 8), for the audit, the report and undo. One JSON
//! object a line: `identityAccountId`, `readAt` and `identity` (Graph's object, as read). A
//! resumed run keeps what the earlier run read (the state before ITS actions) and adds only
//! identities not there yet.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::journal::{open_private, private_options, restrict, rfc3339, sync_parent_dir};
use crate::graph::identity::Fetched;

/// `<results stem>.identities.jsonl` beside the results.
pub fn path_for(results: &Path) -> PathBuf {
    let stem = results
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("results");
    results.with_file_name(format!("{stem}.identities.jsonl"))
}

/// Writes `identities` to the snapshot at `path`: a new file, or (`resume`) added to the
/// earlier run's, skipping identities it already holds. Returns how many were written.
pub fn write<'f>(
    path: &Path,
    identities: impl Iterator<Item = &'f Fetched>,
    resume: bool,
) -> io::Result<u64> {
    let mut known: HashSet<String> = HashSet::new();
    if resume && let Ok(file) = std::fs::File::open(path) {
        for line in BufReader::new(file).lines() {
            let line = line?;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(id) = value["identityAccountId"].as_str()
            {
                known.insert(id.to_owned());
            }
        }
    }
    let mut options = private_options();
    if resume {
        options.append(true).create(true);
    } else {
        options.write(true).create(true).truncate(true);
    }
    let file = open_private(&options, path)?;
    restrict(&file)?;
    let mut out = BufWriter::new(file);
    let read_at = rfc3339(SystemTime::now());
    let mut written = 0;
    for fetched in identities {
        if !known.insert(fetched.identity.id.clone()) {
            continue;
        }
        let line = serde_json::json!({
            "identityAccountId": fetched.identity.id,
            "readAt": read_at,
            "identity": fetched.raw,
        });
        serde_json::to_writer(&mut out, &line).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    sync_parent_dir(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::identity::Identity;

    fn fetched(id: &str) -> Fetched {
        let identity = Identity {
            id: id.to_owned(),
            is_enabled: Some(true),
            ..Identity::default()
        };
        Fetched {
            raw: serde_json::to_value(&identity).unwrap(),
            identity,
        }
    }

    #[test]
    fn the_snapshot_sits_beside_the_results_and_a_resume_adds_only_new_identities() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("incident.results.jsonl");
        let path = path_for(&results);
        assert_eq!(path, dir.path().join("incident.results.identities.jsonl"));
        let (a, b) = (fetched("a"), fetched("b"));
        assert_eq!(write(&path, [&a].into_iter(), false).unwrap(), 1);
        assert_eq!(write(&path, [&a, &b].into_iter(), true).unwrap(), 1);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["identity"]["isEnabled"], true);
        assert_eq!(lines[1]["identityAccountId"], "b");
    }
}
