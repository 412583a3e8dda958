//! Pieces every Skiff binary shares: validated names, the SQL store, JWT tokens,
//! and the small configuration types that the manager, router and CLI all parse.

pub mod deno;
pub mod fnconfig;
pub mod layout;
pub mod logs;
pub mod memory;
pub mod names;
pub mod naming;
pub mod ready;
pub mod runtime_kind;
pub mod secret;
pub mod secrets;
pub mod settings;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tokens;
pub mod trusted_proxies;
