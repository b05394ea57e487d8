//! The runtime shells (WASM only): they carry out what the core decides.

mod chat_room;
mod message_store;
mod moderation_store;
mod worker;
