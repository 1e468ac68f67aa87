//! The protect files a run names (`--protect`, and the default one in the user's config
//! directory), and reading them into one [`ProtectList`]. The command line only names them; the
//! run reads them as it prepares, before any other file is touched (issue 17: the conversion of
//! the command line does no file I/O).

use std::path::PathBuf;

use super::{ProtectFileError, ProtectList};

/// The protect files a run names, not yet read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectFiles {
    /// `--protect FILE`, in the order given.
    pub given: Vec<PathBuf>,
    /// The default protect file's path, read when anything is there (issue 16); `None` when the
    /// user has no config directory.
    pub default: Option<PathBuf>,
}

impl ProtectFiles {
    /// Reads them, merged: the default file first (unless it is also given), then each given one.
    /// `None` when none was given and nothing is at the default path. Errors name the file, and
    /// `FILE:LINE` for a bad entry.
    pub fn read(&self) -> Result<Option<ProtectList>, ProtectFileError> {
        let mut merged: Option<ProtectList> = None;
        let mut merge = |list: ProtectList| match &mut merged {
            Some(merged) => merged.merge(list),
            None => merged = Some(list),
        };
        if let Some(default) = &self.default
            && !self.given.contains(default)
            && let Some(list) = ProtectList::load_default(default)?
        {
            merge(list);
        }
        for file in &self.given {
            merge(ProtectList::load(file)?);
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_comes_first_and_once_and_a_missing_one_is_no_list() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("protect.txt");
        let given = dir.path().join("more.txt");
        std::fs::write(&default, "a@contoso.com\n").unwrap();
        std::fs::write(&given, "b@contoso.com\n").unwrap();
        let files = ProtectFiles {
            given: vec![given.clone(), default.clone()],
            default: Some(default.clone()),
        };
        let list = files.read().unwrap().unwrap();
        assert_eq!(list.files, vec![given.clone(), default.clone()]);
        let values: Vec<&str> = list.protected.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(values, ["b@contoso.com", "a@contoso.com"]);

        let files = ProtectFiles {
            given: vec![given.clone()],
            default: Some(default.clone()),
        };
        assert_eq!(files.read().unwrap().unwrap().files, vec![default, given]);

        let nothing = ProtectFiles {
            given: Vec::new(),
            default: Some(dir.path().join("absent.txt")),
        };
        assert_eq!(nothing.read().unwrap(), None);
    }
}
