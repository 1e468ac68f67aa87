//! What the mock remembers of delegated sign-ins (issue 18): device codes and their polls,
//! authorization codes with their PKCE challenge, and the refresh tokens still good (each works
//! once). `delegated.rs` serves the flows; this is only their memory and counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of the delegated flows, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignInStats {
    pub device_codes: u64,
    pub device_polls: u64,
    pub authorizations: u64,
    pub refresh_grants: u64,
    /// Refresh tokens presented that were already used (or never issued).
    pub stale_refresh_tokens: u64,
}

/// What the mock remembers of delegated sign-ins.
#[derive(Default)]
pub(crate) struct SignInState {
    pub(crate) devices: Mutex<HashMap<String, Device>>,
    pub(crate) codes: Mutex<HashMap<String, Code>>,
    pub(crate) refresh_tokens: Mutex<HashMap<String, Grant>>,
    pub(crate) device_codes: AtomicU64,
    pub(crate) device_polls: AtomicU64,
    pub(crate) authorizations: AtomicU64,
    pub(crate) refresh_grants: AtomicU64,
    pub(crate) stale_refresh_tokens: AtomicU64,
}

pub(crate) struct Device {
    pub(crate) polls: usize,
    pub(crate) grant: Grant,
}

pub(crate) struct Code {
    pub(crate) challenge: String,
    pub(crate) redirect_uri: String,
    pub(crate) grant: Grant,
}

#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) tenant: String,
}

impl SignInState {
    pub(crate) fn stats(&self) -> SignInStats {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        SignInStats {
            device_codes: read(&self.device_codes),
            device_polls: read(&self.device_polls),
            authorizations: read(&self.authorizations),
            refresh_grants: read(&self.refresh_grants),
            stale_refresh_tokens: read(&self.stale_refresh_tokens),
        }
    }
}
