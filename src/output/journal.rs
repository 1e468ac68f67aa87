//! The results file: one record per input row, written by a single task as rows finish and
//! flushed as it goes, so a killed run leaves a valid file. JSONL by default, CSV by extension.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::record::{FIELDS, Record, ResultsFormat, carry_names, csv_line};
use crate::outcome::{Entry, InflightNote, Outcome};

// Where the commands have always found them.
pub(crate) use super::record::{carry_names_besides, rfc3339};

/// Where a run's records go in the results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalStart {
    /// A new file (an existing one is replaced).
    New,
    /// Continue an earlier run's file (`--resume`): keep its first `keep` bytes (everything up to
    /// the last complete record, so a torn last line is dropped) and append after them.
    Append { keep: u64 },
}

/// Writes records to the results file.
pub struct Journal {
    path: PathBuf,
    format: ResultsFormat,
    out: BufWriter<File>,
    /// Names of the carried columns, renamed where they clash with a fixed field.
    carry_names: Vec<String>,

    /// Byte offset where this run's records begin (after the CSV header for a new file).
    segment_start: u64,
}

impl Journal {
    /// Starts writing the results file `file` (already opened and locked by
    /// [`super::lock::RunLock`]) at `path`. A new CSV file gets its header.
    pub fn start(
        path: &Path,
        file: File,
        carry_columns: &[String],
        start: JournalStart,
    ) -> io::Result<Journal> {
        // An earlier run's file may have been readable by others; ours never is (issue 10).
        restrict(&file)?;
        let keep = match start {
            JournalStart::New => 0,
            // Drops a torn last record left by a killed run.
            JournalStart::Append { keep } => keep,
        };
        file.set_len(keep)?;
        if start == JournalStart::New {
            sync_parent_dir(path);
        }
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let segment_start = out.seek(SeekFrom::Start(keep))?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            format: ResultsFormat::from_path(path),
            out,
            carry_names: carry_names(carry_columns),
            segment_start,
        };
        if journal.format == ResultsFormat::Csv && start == JournalStart::New {
            let header = journal.csv_header()?;
            journal.out.write_all(&header)?;
            journal.out.flush()?;
            journal.segment_start = header.len() as u64;
        }
        Ok(journal)
    }

    /// The CSV header line for these carried columns.
    fn csv_header(&mut self) -> io::Result<Vec<u8>> {
        let header = FIELDS
            .iter()
            .copied()
            .chain(self.carry_names.iter().map(String::as_str));
        csv_line(header)
    }

    /// Pushes buffered records to the file and asks the OS to put them on disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// After a resumed run: rewrite the file as exactly this run's records (one per input row),
    /// through a temporary file and a rename, so a crash leaves either the old or the new file.
    pub fn compact(mut self) -> io::Result<()> {
        self.sync()?;
        let header = match self.format {
            ResultsFormat::Csv => self.csv_header()?,
            ResultsFormat::Jsonl => Vec::new(),
        };
        let header_len = header.len() as u64;
        if self.segment_start == header_len {
            // A new file already holds only this run's records.
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        temp.write_all(&header)?;
        let mut source = File::open(&self.path)?;
        source.seek(SeekFrom::Start(self.segment_start))?;
        io::copy(&mut source, &mut temp)?;
        temp.as_file().sync_all()?;
        temp.persist(&self.path).map_err(|e| e.error)?;
        sync_parent_dir(&self.path);
        Ok(())
    }

    /// Appends one record (buffered; call [`Journal::flush`] to push it to the file).
    pub fn append(&mut self, outcome: &Outcome) -> io::Result<()> {
        let record = Record::of(outcome, &self.carry_names);
        match self.format {
            ResultsFormat::Jsonl => {
                serde_json::to_writer(&mut self.out, &record).map_err(io::Error::other)?;
                self.out.write_all(b"\n")
            }
            ResultsFormat::Csv => {
                let cells = record.csv_cells()?;
                self.out
                    .write_all(&csv_line(cells.iter().map(String::as_str))?)
            }
        }
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Sync after this many records...
pub const SYNC_EVERY: u64 = 256;
/// ...or when the oldest unsynced record is this old.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Everything the writer thread writes to.
pub struct Sinks {
    pub journal: Journal,
    pub inflight: Option<InflightLog>,
}

/// How the writer ended: the sinks for the finishing steps, and the first write error if there
/// was one (after which nothing more was written).
pub struct WriterEnd {
    pub sinks: Sinks,
    pub failure: Option<io::Error>,
}

/// The writer loop, on its own thread: append every record as it arrives, flush whenever the
/// queue runs dry, and sync in groups (every [`SYNC_EVERY`] records or [`SYNC_INTERVAL`]), so
/// after `kill -9` the file holds every finished row but at most the last group. In-flight notes
/// are synced before they are acknowledged.
///
/// Every outcome is also shown to `observe` (the summary's tally, the progress bar's counts),
/// written or not: the writer records, others fold.
///
/// A write error does not end the loop: the writer calls `on_failure` once (the run stops
/// starting rows), keeps receiving entries so that no worker or reader is left waiting, refuses
/// every later note (so no request leaves unrecorded), and still shows every outcome to
/// `observe`, which the summary needs. What was written before the error stays as it is, for
/// `--resume`.
pub fn write_entries(
    mut sinks: Sinks,
    mut entries: mpsc::Receiver<Entry>,
    observe: &mut dyn FnMut(&Outcome),
    on_failure: &dyn Fn(&io::Error),
) -> WriterEnd {
    let mut failure: Option<io::Error> = None;
    let mut unsynced: u64 = 0;
    let mut oldest_unsynced: Option<Instant> = None;
    let mut acks: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    while let Some(entry) = entries.blocking_recv() {
        let mut next = Some(entry);
        // Everything queued is written in one go: while the writer syncs, entries gather, so the
        // cost of a sync is shared by every note and record that arrived meanwhile.
        let mut written: io::Result<()> = Ok(());
        while let Some(entry) = next {
            match entry {
                Entry::Outcome(outcome) => {
                    if failure.is_none() && written.is_ok() {
                        written = sinks.journal.append(&outcome);
                        unsynced += 1;
                        oldest_unsynced.get_or_insert_with(Instant::now);
                    }
                    observe(&outcome);
                }
                Entry::Started { note, ack } => {
                    if failure.is_none() && written.is_ok() {
                        if let Some(inflight) = &mut sinks.inflight {
                            written = inflight.append(&note);
                        }
                        acks.push(ack);
                    } else {
                        let _ = ack.send(Err(refused_note(failure.as_ref())));
                    }
                }
                Entry::Tick => {}
            }
            next = entries.try_recv().ok();
        }
        if failure.is_none() {
            let mut result = written.and_then(|()| sinks.flush());
            if result.is_ok() && !acks.is_empty() {
                // The notes reach the disk before their requests leave.
                result = sinks.sync_inflight();
            }
            if let Err(error) = result {
                on_failure(&error);
                failure = Some(error);
            }
        }
        // The requests go as soon as their notes are on disk: the records' group sync below
        // is no business of theirs, and waiting for it too cost every noted request a second
        // fdatasync (issue 17 item 8).
        for ack in acks.drain(..) {
            let answer = match &failure {
                None => Ok(()),
                Some(error) => Err(refused_note(Some(error))),
            };
            let _ = ack.send(answer);
        }
        let due = oldest_unsynced.is_some_and(|t| t.elapsed() >= SYNC_INTERVAL);
        if failure.is_none() && (unsynced >= SYNC_EVERY || due) {
            unsynced = 0;
            oldest_unsynced = None;
            if let Err(error) = sinks.sync() {
                on_failure(&error);
                failure = Some(error);
            }
        }
    }
    if failure.is_none()
        && let Err(error) = sinks.sync()
    {
        on_failure(&error);
        failure = Some(error);
    }
    WriterEnd { sinks, failure }
}

fn refused_note(failure: Option<&io::Error>) -> String {
    match failure {
        Some(error) => format!("not sent: the results could not be written ({error})"),
        None => "not sent: the results could not be written".to_owned(),
    }
}

impl Sinks {
    fn flush(&mut self) -> io::Result<()> {
        self.journal.flush()?;
        if let Some(inflight) = &mut self.inflight {
            inflight.flush()?;
        }
        Ok(())
    }

    fn sync_inflight(&mut self) -> io::Result<()> {
        match &mut self.inflight {
            Some(inflight) => inflight.sync(),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        // The in-flight log first: a record must never be durable while the note that its
        // request left is not.
        self.sync_inflight()?;
        self.journal.sync()
    }
}

/// `<results>.inflight`: one JSON line per request about to leave ([`InflightNote`]). Removed
/// when a run ends in order; read by `--resume` after a crash.
pub struct InflightLog {
    path: PathBuf,
    out: BufWriter<File>,
    /// Notes written since the last sync: a sync with none to cover is skipped, since the
    /// records' group sync follows the notes' own (issue 17 item 8).
    unsynced: bool,
}

impl InflightLog {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".inflight");
        PathBuf::from(name)
    }

    /// Opens for appending (a resumed run adds to what an interrupted one left).
    pub fn open(results: &Path) -> io::Result<InflightLog> {
        let path = InflightLog::path_for(results);
        let file = open_private(private_options().append(true).create(true), &path)?;
        restrict(&file)?;
        Ok(InflightLog {
            path,
            out: BufWriter::new(file),
            unsynced: false,
        })
    }

    fn append(&mut self, note: &InflightNote) -> io::Result<()> {
        self.unsynced = true;
        serde_json::to_writer(&mut self.out, note).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        self.unsynced = false;
        Ok(())
    }

    /// Called once every row has its record: nothing is in flight any more.
    pub fn remove(self) -> io::Result<()> {
        drop(self.out);
        std::fs::remove_file(&self.path)
    }
}

/// Files the tool creates hold account data: readable by the owner only (0600 on Unix), and never
/// opened through a symbolic link, which could point the write at another file (issue 10).
pub fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options
}

/// Opens `path` with `options` (from [`private_options`]), saying so plainly when the path is a
/// symbolic link.
pub fn open_private(options: &std::fs::OpenOptions, path: &Path) -> io::Result<File> {
    options.open(path).map_err(|error| {
        #[cfg(unix)]
        if error.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(
                error.kind(),
                format!(
                    "{} is a symbolic link; the tool does not write through links: give the path of the file itself",
                    path.display()
                ),
            );
        }
        error
    })
}

/// Makes an opened file readable by its owner only: a file that existed before keeps the mode it
/// was created with otherwise.
pub fn restrict(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// After creating or renaming a file, makes its directory entry durable too (Linux needs the
/// directory itself synced). Best effort: not every platform or filesystem allows it.
pub fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
