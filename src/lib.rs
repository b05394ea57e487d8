//! edge chat: real-time chat rooms on Cloudflare Workers.
//!
//! Three layers, one folder each:
//! - `chat`: the pure core, plain Rust tested natively with `cargo test`: the wire protocol,
//!   nicknames, rate limiting, history and close rules, and a room's live state (`room`),
//!   which decides what happens and does no I/O;
//! - `edge`: what the Worker checks before any room is touched: HTTP routing, origins, vars;
//! - `runtime`: the shells compiled only for WASM, thin on purpose: `worker` routes requests
//!   to one Durable Object per room, and `chat_room` is that object, which carries out what
//!   the room decides and stores messages through `message_store`.

pub mod chat;
pub mod edge;

#[cfg(target_arch = "wasm32")]
mod runtime;
