//! A room's message history in its Durable Object's SQLite storage. One insert per message;
//! `history::trim_cutoff` says when to drop old ones. Writes are synchronous, and the runtime
//! holds back every frame sent after a write until that write is durable, so a message that
//! was broadcast (or echoed to its sender) is on disk.
//!
//! The table is created by the first insert, not before: reading a room that never had a
//! message writes nothing, so asking about any number of unknown rooms stores nothing.

use crate::chat::history::Window;
use crate::chat::protocol::ChatMessage;
use serde::Deserialize;
use std::cell::Cell;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::JsString;
use worker::{SqlStorage, SqlStorageValue};

#[wasm_bindgen]
extern "C" {
    /// `ctx.storage.sql` seen only for an `exec` with the insert's four bindings as plain
    /// arguments: `worker`'s general `exec` builds a JS array of them one call at a time.
    type RawSql;

    #[wasm_bindgen(method, catch, js_name = exec)]
    fn exec_insert(this: &RawSql, query: &JsString, id: f64, nick: &str, text: &str, at: f64) -> Result<JsValue, JsValue>;
}

const INSERT: &str = "INSERT INTO messages (id, nick, text, at) VALUES (?, ?, ?, ?)";

/// Ids above this cannot cross into JavaScript exactly; `since` is clamped to it.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

pub struct MessageStore {
    sql: SqlStorage,
    /// `INSERT` as a JS string, made once rather than per message.
    insert: JsString,
    /// Whether the messages table exists: learnt by `last`, set by the first `insert`.
    schema: Cell<bool>,
}

#[derive(Deserialize)]
struct Row {
    id: u64,
    nick: String,
    text: String,
    at: u64,
}

#[derive(Deserialize)]
struct Last {
    id: u64,
    at: u64,
}

impl MessageStore {
    pub fn new(sql: SqlStorage) -> MessageStore {
        MessageStore { sql, insert: JsString::from(INSERT), schema: Cell::new(false) }
    }

    pub fn has_schema(&self) -> bool {
        self.schema.get()
    }

    /// After the object's storage was deleted.
    pub fn forget_schema(&self) {
        self.schema.set(false);
    }

    fn create_schema(&self) -> worker::Result<()> {
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY,
                nick TEXT NOT NULL,
                text TEXT NOT NULL,
                at INTEGER NOT NULL
            )",
            None,
        )?;
        self.schema.set(true);
        Ok(())
    }

    /// The id and time of the newest message, or zeros for a room without messages. Reads only.
    pub fn last(&self) -> worker::Result<(u64, u64)> {
        #[derive(Deserialize)]
        struct Table {}
        let tables: Vec<Table> = self
            .sql
            .exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'messages'", None)?
            .to_array()?;
        self.schema.set(!tables.is_empty());
        if tables.is_empty() {
            return Ok((0, 0));
        }
        let rows: Vec<Last> =
            self.sql.exec("SELECT id, at FROM messages ORDER BY id DESC LIMIT 1", None)?.to_array()?;
        Ok(rows.first().map_or((0, 0), |last| (last.id, last.at)))
    }

    pub fn insert(&self, message: &ChatMessage) -> worker::Result<()> {
        if !self.schema.get() {
            self.create_schema()?;
        }
        // They cross as JS numbers, exact only up to 2^53 - 1.
        if message.id > MAX_SAFE_INTEGER || message.at > MAX_SAFE_INTEGER {
            return Err(worker::Error::RustError(format!("message {} is beyond JS's exact integers", message.id)));
        }
        let raw: &RawSql = self.sql.as_ref().unchecked_ref();
        raw.exec_insert(&self.insert, message.id as f64, &message.nick, &message.text, message.at as f64)?;
        Ok(())
    }

    /// Deletes every message with an id at or below `cutoff`.
    pub fn trim(&self, cutoff: u64) -> worker::Result<()> {
        self.sql.exec("DELETE FROM messages WHERE id <= ?", vec![SqlStorageValue::try_from_i64(cutoff as i64)?])?;
        Ok(())
    }

    /// The messages of `window`, oldest first. Call `last` first: without the table, none.
    pub fn read(&self, window: Window) -> worker::Result<Vec<ChatMessage>> {
        if !self.schema.get() {
            return Ok(Vec::new());
        }
        let cursor = match window {
            Window::Latest { limit } => self.sql.exec(
                "SELECT * FROM (SELECT id, nick, text, at FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id",
                vec![SqlStorageValue::from(limit as i64)],
            )?,
            Window::After { since, limit } => self.sql.exec(
                "SELECT id, nick, text, at FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                vec![SqlStorageValue::from(since.min(MAX_SAFE_INTEGER) as i64), SqlStorageValue::from(limit as i64)],
            )?,
        };
        let rows: Vec<Row> = cursor.to_array()?;
        Ok(rows.into_iter().map(|r| ChatMessage { id: r.id, nick: r.nick, text: r.text, at: r.at }).collect())
    }
}
