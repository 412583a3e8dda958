//! Pieces every Skiff binary shares: validated names, the SQL store, JWT tokens,
//! and the small configuration types that the manager, router and CLI all parse.

pub mod deno;
pub mod names;
pub mod secret;
pub mod store;
pub mod time;
pub mod tokens;
