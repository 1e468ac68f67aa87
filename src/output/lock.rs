//! One run per results file. `<results>.lock` is held with the OS's advisory file lock for the
//! whole run, and so is the results file itself, so a second name for the same file (a hard link)
//! cannot start a second writer (issue 10). The lock file also keeps what the run was: the
//! input's fingerprint, so `--resume` can tell when the input changed, and the endpoint it sent
//! to, so a rehearsal's results never pass for a real run's. Neither file is opened through a
//! symbolic link.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{open_private, private_options, restrict};
pub use crate::graph::client::MOCK_ENDPOINT;

/// What a run records about itself in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub pid: u32,
    pub input: String,
    pub input_fingerprint: String,
    pub rows: u64,
    /// Where the requests went: the Graph service root, or [`MOCK_ENDPOINT`]. Absent in lock
    /// files written before it was recorded.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Who ran it and how, for `report`: never a secret. Absent in older lock files.
    #[serde(default, flatten)]
    pub about: RunAbout,
    /// The guardrails it ran under, so that a `--resume` with fewer stops (issue 16). Absent in
    /// older lock files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guards: Option<GuardsRecord>,
}

/// The guardrails a run was started under: the protect files with the entries they protected,
/// and `--protect-privileged`. A resume compares its own with them: rows an earlier run refused
/// as protected run again, so a guard that is gone (a `--protect` left out, the default file of
/// another HOME under sudo or cron) would let them through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardsRecord {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect_files: Vec<ProtectFileRecord>,
    #[serde(default)]
    pub protect_privileged: bool,
}

/// One protect file as a run read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectFileRecord {
    pub path: String,
    /// Its protected entries, compared ignoring case (the `[allow]` section is not a guard).
    pub protected: Vec<String>,
}

impl GuardsRecord {
    /// The guards `earlier` was under that this run's (`self`) lacks, one phrase each: a protect
    /// file whose entries are not all protected now (by whichever file), or
    /// `--protect-privileged`. Empty when this run guards at least as much.
    pub fn missing_now(&self, earlier: &GuardsRecord) -> Vec<String> {
        let now: std::collections::HashSet<String> = self
            .protect_files
            .iter()
            .flat_map(|file| &file.protected)
            .map(|entry| entry.to_lowercase())
            .collect();
        let mut missing: Vec<String> = earlier
            .protect_files
            .iter()
            .filter_map(|file| {
                let lost = file
                    .protected
                    .iter()
                    .filter(|entry| !now.contains(&entry.to_lowercase()))
                    .count();
                (lost > 0).then(|| {
                    format!(
                        "protect file {} ({lost} of its {} protected entries are in no protect file of this run)",
                        crate::sanitize::printable(&file.path),
                        file.protected.len()
                    )
                })
            })
            .collect();
        if earlier.protect_privileged && !self.protect_privileged {
            missing.push("--protect-privileged".to_owned());
        }
        missing
    }
}

/// When a run started, as whom, and the command line it was started with (which never holds a
/// secret: secrets come from files or the environment). `report` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunAbout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The directory (tenant) id or domain, as given or as the ready token names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The application (client) id, as given or as the ready token names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Which kind of credential signed in (a certificate, a secret, a ready token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Who acted, as Graph's audit log will name them (issue 18): the signed-in user's UPN for
    /// a delegated sign-in, else the app's (or managed identity's) client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl RunState {
    /// Whether the results were a rehearsal against the built-in mock.
    pub fn is_rehearsal(&self) -> bool {
        self.endpoint.as_deref() == Some(MOCK_ENDPOINT)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another graph-remediate run{} is writing {results}; its lock is {lock}. Wait for it to finish, or stop it",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Busy {
        results: String,
        lock: String,
        holder: Option<u32>,
    },
    #[error(
        "another graph-remediate run is writing {results} under another name (a hard link to the same file); wait for it to finish, or choose another -o"
    )]
    BusyElsewhere { results: String },
    #[error("cannot lock {lock}: {cause}")]
    Io { lock: String, cause: io::Error },
}

/// Held for the whole run; released when dropped (or when the process dies).
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// The results file, claimed for one run.
pub struct Claim {
    pub lock: RunLock,
    /// What the previous run on this results file recorded, if any.
    pub previous: Option<RunState>,
    /// The results file, locked for this run; the journal writes through this handle.
    pub results: File,
    /// Whether the results file held anything before this run.
    pub had_results: bool,
    /// Whether this run created the results file (a run that ends before sending removes it).
    pub created: bool,
}

impl RunLock {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock without waiting, then opens (or creates) the results file and locks it
    /// too. Returns both with what the previous run recorded.
    pub fn claim(results: &Path) -> Result<Claim, LockError> {
        let path = RunLock::path_for(results);
        let lock_error = |cause| LockError::Io {
            lock: path.display().to_string(),
            cause,
        };
        let mut file = open_private(
            private_options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &path,
        )
        .map_err(lock_error)?;
        restrict(&file).map_err(lock_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_state(&mut file).map(|state| state.pid);
                return Err(LockError::Busy {
                    results: results.display().to_string(),
                    lock: path.display().to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(cause)) => return Err(lock_error(cause)),
        }
        let previous = read_state(&mut file);
        let results_error = |cause| LockError::Io {
            lock: results.display().to_string(),
            cause,
        };
        let (results_file, created) = match open_private(
            private_options().read(true).write(true).create_new(true),
            results,
        ) {
            Ok(file) => (file, true),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => (
                open_private(private_options().read(true).write(true), results)
                    .map_err(results_error)?,
                false,
            ),
            Err(error) => return Err(results_error(error)),
        };
        match results_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                if created {
                    let _ = std::fs::remove_file(results);
                }
                return Err(LockError::BusyElsewhere {
                    results: results.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(cause)) => return Err(results_error(cause)),
        }
        let had_results = results_file.metadata().map_err(results_error)?.len() > 0;
        Ok(Claim {
            lock: RunLock { file, path },
            previous,
            results: results_file,
            had_results,
            created,
        })
    }

    /// Records this run's state (replacing the previous run's).
    pub fn record(&mut self, state: &RunState) -> io::Result<()> {
        let text = serde_json::to_string(state).map_err(io::Error::other)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_state(file: &mut File) -> Option<RunState> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    // A run's state is a few hundred bytes: a huge lock file is not read whole (issue 16).
    file.take(1024 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// A fingerprint of the input's bytes: FNV-1a 64 and the length. Stable across versions (unlike
/// std's hasher) and fast enough for a million rows; it detects change, not tampering.
pub fn fingerprint(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut len: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            break;
        }
        for byte in &buf[..read] {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        len += read as u64;
    }
    Ok(format!("fnv1a64:{hash:016x}:{len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_results_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.jsonl");
        let claim = RunLock::claim(&results).unwrap();
        let mut lock = claim.lock;
        assert_eq!(claim.previous, None);
        assert!(claim.created && !claim.had_results);
        lock.record(&RunState {
            pid: 4242,
            input: "in.csv".into(),
            input_fingerprint: "x".into(),
            rows: 3,
            endpoint: Some(MOCK_ENDPOINT.into()),
            about: RunAbout::default(),
            guards: None,
        })
        .unwrap();
        match RunLock::claim(&results) {
            Err(LockError::Busy { holder, lock, .. }) => {
                assert_eq!(holder, Some(4242));
                assert!(lock.ends_with("r.jsonl.lock"));
            }
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        drop(lock);
        drop(claim.results);
        let claim = RunLock::claim(&results).unwrap();
        let previous = claim.previous.unwrap();
        assert_eq!(previous.rows, 3, "the state survives for the next run");
        assert!(previous.is_rehearsal());
        assert!(!claim.created);
    }

    #[cfg(unix)]
    #[test]
    fn issue_10_a_hard_linked_alias_of_the_results_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.jsonl");
        let claim = RunLock::claim(&results).unwrap();
        let alias = dir.path().join("alias.jsonl");
        std::fs::hard_link(&results, &alias).unwrap();
        assert!(matches!(
            RunLock::claim(&alias),
            Err(LockError::BusyElsewhere { .. })
        ));
        drop(claim);
        assert!(
            RunLock::claim(&alias).is_ok(),
            "free once the first run ends"
        );
    }

    #[cfg(unix)]
    #[test]
    fn issue_10_results_and_lock_files_are_never_opened_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious.txt");
        std::fs::write(&target, "keep me").unwrap();
        // A dangling link as the results file, and a link as the lock file.
        let results = dir.path().join("r.jsonl");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &results).unwrap();
        let error = RunLock::claim(&results).err().unwrap().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert!(
            !dir.path().join("nowhere").exists(),
            "the link was not followed"
        );

        let other = dir.path().join("s.jsonl");
        std::os::unix::fs::symlink(&target, RunLock::path_for(&other)).unwrap();
        let error = RunLock::claim(&other).err().unwrap().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn issue_16_a_resume_with_fewer_guards_names_each_one_it_lacks() {
        let file = |path: &str, entries: &[&str]| ProtectFileRecord {
            path: path.into(),
            protected: entries.iter().map(|e| (*e).to_owned()).collect(),
        };
        let earlier = GuardsRecord {
            protect_files: vec![
                file(
                    "/root/.config/graph-remediate/protect.txt",
                    &["a@b.c", "S-1-5-21-1"],
                ),
                file("extra.txt", &["x@y.z"]),
            ],
            protect_privileged: true,
        };
        // The same entries from a file elsewhere, in another case: nothing is missing.
        let same = GuardsRecord {
            protect_files: vec![file("copy.txt", &["A@B.C", "s-1-5-21-1", "x@y.z"])],
            protect_privileged: true,
        };
        assert!(same.missing_now(&earlier).is_empty());
        let fewer = GuardsRecord {
            protect_files: vec![file("extra.txt", &["x@y.z"])],
            protect_privileged: false,
        };
        assert_eq!(
            fewer.missing_now(&earlier),
            [
                "protect file /root/.config/graph-remediate/protect.txt (2 of its 2 protected entries are in no protect file of this run)",
                "--protect-privileged"
            ]
        );
        // A record in an older lock file reads as no guard.
        let state: RunState =
            serde_json::from_str(r#"{"pid":1,"input":"in.csv","inputFingerprint":"x","rows":1}"#)
                .unwrap();
        assert_eq!(state.guards, None);
    }

    #[test]
    fn fingerprints_change_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let first = fingerprint(&path).unwrap();
        assert_eq!(first, fingerprint(&path).unwrap());
        std::fs::write(&path, "a,b\n1,3\n").unwrap();
        assert_ne!(first, fingerprint(&path).unwrap());
    }
}
