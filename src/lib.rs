//! edge chat: real-time chat rooms on Cloudflare Workers.
//!
//! The room logic is plain Rust, tested natively with `cargo test`: the wire protocol
//! (`protocol`), nicknames, rate limiting, history rules, close codes, HTTP routing, origin
//! checks and a room's live state (`room`). The runtime shells, compiled only for WASM, are
//! thin: `worker` routes requests to one Durable Object per room, and `chat_room` is that
//! object, which carries out what `room` decides and stores messages through `message_store`.

pub mod close;
pub mod config;
pub mod history;
pub mod nicknames;
pub mod origin;
pub mod protocol;
pub mod rate_limit;
pub mod room;
pub mod routes;

#[cfg(test)]
mod properties;

#[cfg(target_arch = "wasm32")]
mod chat_room;
#[cfg(target_arch = "wasm32")]
mod message_store;
#[cfg(target_arch = "wasm32")]
mod worker;
