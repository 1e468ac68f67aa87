//! One run per results file: `<results>.lock`, held with the OS's advisory file lock for the whole
//! run. The lock file also keeps the input's fingerprint, so `--resume` can tell when the input
//! changed since the results were written.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::private_options;

/// What a run records about itself in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub pid: u32,
    pub input: String,
    pub input_fingerprint: String,
    pub rows: u64,
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
    #[error("cannot lock {lock}: {source}")]
    Io {
        lock: String,
        #[source]
        source: io::Error,
    },
}

/// Held for the whole run; released when dropped (or when the process dies).
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock without waiting. Returns it with what the previous run recorded, if any.
    pub fn acquire(results: &Path) -> Result<(RunLock, Option<RunState>), LockError> {
        let path = RunLock::path_for(results);
        let io_error = |source| LockError::Io {
            lock: path.display().to_string(),
            source,
        };
        let mut file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
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
            Err(std::fs::TryLockError::Error(source)) => return Err(io_error(source)),
        }
        let previous = read_state(&mut file);
        Ok((RunLock { file, path }, previous))
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
    file.read_to_string(&mut text).ok()?;
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
        let (mut lock, previous) = RunLock::acquire(&results).unwrap();
        assert_eq!(previous, None);
        lock.record(&RunState {
            pid: 4242,
            input: "in.csv".into(),
            input_fingerprint: "x".into(),
            rows: 3,
        })
        .unwrap();
        match RunLock::acquire(&results) {
            Err(LockError::Busy { holder, lock, .. }) => {
                assert_eq!(holder, Some(4242));
                assert!(lock.ends_with("r.jsonl.lock"));
            }
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        drop(lock);
        let (_lock, previous) = RunLock::acquire(&results).unwrap();
        assert_eq!(
            previous.unwrap().rows,
            3,
            "the state survives for the next run"
        );
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
