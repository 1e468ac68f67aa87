//! Microsoft Graph: the wire model of invokeAction and (later) one HTTP attempt at it.

pub mod model;
