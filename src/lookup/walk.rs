//! Following a paged list's `@odata.nextLink` to its end, within bounds (issue 16): the one walk
//! the identity list and the guard's `roleAssignments` reads both use. Owns the bounds and the
//! reasons a walk cannot finish; what a page holds is the caller's to parse.
//!
//! A server's links are not trusted to end: a page linking to itself, two pages linking to each
//! other, or an endless run of fresh links would otherwise be followed for ever (and every page
//! read kept). So a walk refuses a link it has already followed, and stops after more pages, or
//! more entries, than a tenant can hold ([`super::read::MAX_TENANT_OBJECTS`]), or after a run of pages that
//! list nobody. A walk that fails stays failed, and says which page and why.

use std::collections::HashSet;

// The bounds live beside the reader that carries them, so that `read` does not import `walk`.
pub(crate) use super::read::Limits;
#[cfg(test)]
pub(crate) use super::read::MAX_EMPTY_PAGES;
use super::read::{LookupStop, ReadError, Reader, Service};
use crate::graph::client::MAX_BODY;
use crate::sanitize::printable;

/// Why a walk cannot finish: the rows (or the guard) that needed the rest of the list are not
/// answered from it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WalkError {
    #[error(
        "page {page} of {list} links back to a page already read ({link}): the list loops, so it cannot be read whole"
    )]
    Loop {
        list: String,
        page: u64,
        link: String,
    },
    #[error(
        "{list} goes on past {max} pages, more than a tenant holds: the walk stopped there, so the list was not read whole"
    )]
    TooManyPages { list: String, max: u64 },
    #[error(
        "{list} lists more than {max} entries, more than a tenant holds: the walk stopped there, so the list was not read whole"
    )]
    TooManyEntries { list: String, max: u64 },
    #[error(
        "{list} sent {max} pages that list nobody: the walk stopped there, so the list was not read whole"
    )]
    EmptyPages { list: String, max: u64 },
    #[error("the link on page {page} of {list} cannot be followed: {error}")]
    Link {
        list: String,
        page: u64,
        error: String,
    },
    #[error("page {page} of {list} could not be read: {error}")]
    Read {
        list: String,
        page: u64,
        error: String,
    },
    #[error(
        "page {page} of {list} answered 404 (not found): a page its own list links to is missing, so the list was not read whole"
    )]
    Missing { list: String, page: u64 },
    #[error("page {page} of {list} is not readable: {reason}")]
    Unreadable {
        list: String,
        page: u64,
        reason: String,
    },
}

/// How a step of a walk ended other than with a page.
#[derive(Debug)]
pub(crate) enum WalkStop {
    /// The whole lookup stops (a 403, an interrupt, a throttle past `--max-retry-wait`).
    Stop(LookupStop),
    /// This walk cannot finish.
    Failed(WalkError),
}

/// What a page held, as the caller parsed it.
pub(crate) struct Parsed<T> {
    pub(crate) items: T,
    /// Entries on the page, counted against [`Limits::entries`].
    pub(crate) entries: u64,
    pub(crate) next_link: Option<String>,
}

/// One walk of one list: where it stands, so that it can go on where it stopped.
#[derive(Debug)]
pub(crate) struct Walk {
    list: String,
    limits: Limits,
    next: Option<reqwest::Url>,
    /// The links followed (the first page's too), as digests: a walk of a whole tenant keeps
    /// 16 bytes a page, not the links.
    seen: HashSet<[u8; 16]>,
    pages: u64,
    entries: u64,
    empty_pages: u64,
    failed: Option<WalkError>,
}

impl Walk {
    /// A walk of `list` (named in messages) from its first page, `first`.
    pub(crate) fn new(list: impl Into<String>, first: reqwest::Url, limits: Limits) -> Walk {
        let mut seen = HashSet::new();
        seen.insert(digest(&first));
        Walk {
            list: list.into(),
            limits,
            next: Some(first),
            seen,
            pages: 0,
            entries: 0,
            empty_pages: 0,
            failed: None,
        }
    }

    /// Pages read so far.
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }

    /// Why the walk failed, if it did.
    pub(crate) fn failure(&self) -> Option<&WalkError> {
        self.failed.as_ref()
    }

    /// Whether the last page was read (and the walk did not fail).
    pub(crate) fn ended(&self) -> bool {
        self.next.is_none() && self.failed.is_none()
    }

    /// Reads and parses the next page: `None` once the list has ended. A failure is kept, and
    /// returned again by every later call.
    pub(crate) async fn next<T>(
        &mut self,
        reader: &Reader,
        service: Service,
        parse: impl FnOnce(&[u8]) -> Result<Parsed<T>, String>,
    ) -> Result<Option<T>, WalkStop> {
        if let Some(failed) = &self.failed {
            return Err(WalkStop::Failed(failed.clone()));
        }
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let page = self.pages + 1;
        let result = match reader.read(service, url.clone()).await {
            Ok(Some(body)) if body.len() >= MAX_BODY => Err(WalkError::Unreadable {
                list: self.list.clone(),
                page,
                reason: format!(
                    "it is larger than the {} MiB a page may be, so it is not read",
                    MAX_BODY >> 20
                ),
            }),
            Ok(Some(body)) => parse(&body).map_err(|reason| WalkError::Unreadable {
                list: self.list.clone(),
                page,
                reason,
            }),
            Ok(None) => Err(WalkError::Missing {
                list: self.list.clone(),
                page,
            }),
            Err(ReadError::Stop(stop)) => {
                // Not a failure of the list: the page can be read again once the lookup may go on.
                self.next = Some(url);
                return Err(WalkStop::Stop(stop));
            }
            Err(ReadError::Failed(error)) => Err(WalkError::Read {
                list: self.list.clone(),
                page,
                error: error.to_string(),
            }),
        };
        self.pages = page;
        match result.and_then(|parsed| self.advance(reader, parsed)) {
            Ok(items) => Ok(Some(items)),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(WalkStop::Failed(error))
            }
        }
    }

    /// Counts a page against the limits and takes its link, if it may be followed.
    fn advance<T>(&mut self, reader: &Reader, parsed: Parsed<T>) -> Result<T, WalkError> {
        let list = || self.list.clone();
        self.entries = self.entries.saturating_add(parsed.entries);
        if self.entries > self.limits.entries {
            return Err(WalkError::TooManyEntries {
                list: list(),
                max: self.limits.entries,
            });
        }
        if parsed.entries == 0 {
            self.empty_pages += 1;
            if self.empty_pages >= self.limits.empty_pages && parsed.next_link.is_some() {
                return Err(WalkError::EmptyPages {
                    list: list(),
                    max: self.limits.empty_pages,
                });
            }
        }
        let Some(link) = parsed.next_link else {
            return Ok(parsed.items);
        };
        if self.pages >= self.limits.pages {
            return Err(WalkError::TooManyPages {
                list: list(),
                max: self.limits.pages,
            });
        }
        let url = reader
            .client()
            .next_link(&link)
            .map_err(|error| WalkError::Link {
                list: list(),
                page: self.pages,
                error: error.to_string(),
            })?;
        if !self.seen.insert(digest(&url)) {
            return Err(WalkError::Loop {
                list: list(),
                page: self.pages,
                link: shortened(&link),
            });
        }
        self.next = Some(url);
        Ok(parsed.items)
    }
}

/// A link as the URL parser spells it, digested: two spellings of one URL are one link.
fn digest(url: &reqwest::Url) -> [u8; 16] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_str().as_bytes());
    let mut short = [0; 16];
    short.copy_from_slice(&digest.as_ref()[..16]);
    short
}

/// A link for a message: printable, and not a page long.
fn shortened(link: &str) -> String {
    const MAX: usize = 200;
    let shown = printable(link);
    match shown.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &shown[..at]),
        None => shown.into_owned(),
    }
}
