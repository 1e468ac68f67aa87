//! The integration tests, as one test binary (issue 17): each file below was its own binary, and
//! every one of them linked the whole crate again (18 links, most of CI's time). Now they link once.
//! Each module is what its file's docs say; `common` holds the helpers they share.
//!
//! Run one area with a filter on its module path, for example `cargo test --test it guard::`.

mod common;

mod adaptive;
mod confirm;
mod credentials;
mod decide;
mod delegated;
mod guard;
mod hardening;
mod help;
mod interrupt;
mod lookup;
mod mock_server;
mod mock_tenant;
mod operator;
mod phases;
mod privileged;
mod readme;
mod report;
mod resolve;
mod resume;
mod run;
mod unattended;
mod validate;
