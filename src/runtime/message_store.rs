//! A room's storage in its Durable Object's SQLite database: the message history, nick
//! reservations, settings, and (through `moderation_store`) bans, mutes and the audit trail. One insert per message;
//! `history::trim_cutoff` says when to drop old ones. Writes are synchronous, and the runtime
//! holds back every frame sent after a write until that write is durable, so a message that
//! was broadcast (or echoed to its sender) is on disk.
//!
//! The tables are created by the first write, not before: reading a room that never had one
//! writes nothing, so asking about any number of unknown rooms stores nothing.

use crate::chat::history::Window;
use crate::chat::protocol::ChatMessage;
use crate::chat::room::Reservation;
use serde::Deserialize;
use std::cell::Cell;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::JsString;
use worker::{SqlStorage, SqlStorageValue};

#[wasm_bindgen]
extern "C" {
    /// `ctx.storage.sql` seen only for an `exec` with the insert's bindings as plain
    /// arguments: `worker`'s general `exec` builds a JS array of them one call at a time.
    type RawSql;

    #[wasm_bindgen(method, catch, js_name = exec)]
    fn exec_insert(
        this: &RawSql,
        query: &JsString,
        id: f64,
        nick: &str,
        text: &str,
        at: f64,
        uid: &JsValue,
    ) -> Result<JsValue, JsValue>;
}

/// The setting that keeps a cleared history's last id and time: `"ID AT"`.
const CLEARED_AT: &str = "cleared_at";


const INSERT: &str = "INSERT INTO messages (id, nick, text, at, uid) VALUES (?, ?, ?, ?, ?)";

/// Ids above this cannot cross into JavaScript exactly; `since` is clamped to it.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

pub struct MessageStore {
    /// Also used by the moderation tables' methods (`moderation_store`).
    pub(super) sql: SqlStorage,
    /// `INSERT` as a JS string, made once rather than per message.
    insert: JsString,
    /// Whether the tables exist: learnt by `last`, set by the first write.
    schema: Cell<bool>,
}

#[derive(Deserialize)]
struct Row {
    id: u64,
    nick: String,
    text: String,
    at: u64,
    #[serde(default)]
    uid: Option<String>,
    deleted: u8,
}

#[derive(Deserialize)]
struct ReservationRow {
    nick_key: String,
    user: String,
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

    /// Creates every table (and the columns older rooms lack), before the first write.
    pub fn ensure_schema(&self) -> worker::Result<()> {
        if !self.schema.get() {
            self.create_schema()?;
        }
        Ok(())
    }

    fn create_schema(&self) -> worker::Result<()> {
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY,
                nick TEXT NOT NULL,
                text TEXT NOT NULL,
                at INTEGER NOT NULL,
                uid TEXT,
                deleted INTEGER NOT NULL DEFAULT 0
            )",
            None,
        )?;
        // Rooms created before tickets and moderation lack these columns.
        for (column, declaration) in [("uid", "uid TEXT"), ("deleted", "deleted INTEGER NOT NULL DEFAULT 0")] {
            if self.sql.exec(&format!("SELECT {column} FROM messages LIMIT 0"), None).is_err() {
                self.sql.exec(&format!("ALTER TABLE messages ADD COLUMN {declaration}"), None)?;
            }
        }
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS reservations (nick_key TEXT PRIMARY KEY, user TEXT NOT NULL)",
            None,
        )?;
        self.sql.exec("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)", None)?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS sanctions (
                kind TEXT NOT NULL,
                target_kind TEXT NOT NULL,
                target TEXT NOT NULL,
                nick TEXT NOT NULL,
                until INTEGER,
                PRIMARY KEY (kind, target_kind, target)
            )",
            None,
        )?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS audit (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at INTEGER NOT NULL,
                action TEXT NOT NULL,
                target TEXT,
                by TEXT NOT NULL
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
        if tables.is_empty() {
            self.schema.set(false);
            return Ok((0, 0));
        }
        // A room that has storage gets the tables and columns it may lack from older versions.
        self.create_schema()?;
        let rows: Vec<Last> =
            self.sql.exec("SELECT id, at FROM messages ORDER BY id DESC LIMIT 1", None)?.to_array()?;
        let stored = rows.first().map_or((0, 0), |last| (last.id, last.at));
        let cleared = self.setting(CLEARED_AT)?.and_then(|value| {
            let (id, at) = value.split_once(' ')?;
            Some((id.parse().ok()?, at.parse().ok()?))
        });
        Ok(cleared.map_or(stored, |cleared: (u64, u64)| stored.max(cleared)))
    }

    /// A room setting (slow mode, the address salt, the id a cleared history ended at).
    pub fn setting(&self, key: &str) -> worker::Result<Option<String>> {
        #[derive(Deserialize)]
        struct Setting {
            value: String,
        }
        if !self.schema.get() {
            return Ok(None);
        }
        let rows: Vec<Setting> =
            self.sql.exec("SELECT value FROM settings WHERE key = ?", vec![key.into()])?.to_array()?;
        Ok(rows.into_iter().next().map(|row| row.value))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> worker::Result<()> {
        self.ensure_schema()?;
        self.sql.exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", vec![key.into(), value.into()])?;
        Ok(())
    }

    /// Erases message `id`'s text, keeping its id, nick and time as a tombstone. Returns its
    /// author's nick, or `None` when there is no such message (or it is deleted already).
    pub fn tombstone(&self, id: u64) -> worker::Result<Option<String>> {
        #[derive(Deserialize)]
        struct Author {
            nick: String,
        }
        if !self.schema.get() {
            return Ok(None);
        }
        let rows: Vec<Author> = self
            .sql
            .exec(
                "UPDATE messages SET text = '', deleted = 1 WHERE id = ? AND deleted = 0 RETURNING nick",
                vec![SqlStorageValue::from(id.min(MAX_SAFE_INTEGER) as i64)],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().map(|row| row.nick))
    }

    /// Deletes every message, remembering the last id and time so that ids keep growing.
    pub fn clear(&self, last_id: u64, last_at: u64) -> worker::Result<()> {
        self.set_setting(CLEARED_AT, &format!("{last_id} {last_at}"))?;
        self.sql.exec("DELETE FROM messages", None)?;
        Ok(())
    }

    /// Every nick reserved for a ticket identity in this room.
    pub fn reservations(&self) -> worker::Result<Vec<Reservation>> {
        if !self.schema.get() {
            return Ok(Vec::new());
        }
        let rows: Vec<ReservationRow> = self.sql.exec("SELECT nick_key, user FROM reservations", None)?.to_array()?;
        Ok(rows.into_iter().map(|r| Reservation { nick_key: r.nick_key, user: r.user }).collect())
    }

    pub fn reserve(&self, reservation: &Reservation) -> worker::Result<()> {
        self.ensure_schema()?;
        self.sql.exec(
            "INSERT OR REPLACE INTO reservations (nick_key, user) VALUES (?, ?)",
            vec![reservation.nick_key.as_str().into(), reservation.user.as_str().into()],
        )?;
        Ok(())
    }

    pub fn insert(&self, message: &ChatMessage) -> worker::Result<()> {
        self.ensure_schema()?;
        // They cross as JS numbers, exact only up to 2^53 - 1.
        if message.id > MAX_SAFE_INTEGER || message.at > MAX_SAFE_INTEGER {
            return Err(worker::Error::RustError(format!("message {} is beyond JS's exact integers", message.id)));
        }
        let raw: &RawSql = self.sql.as_ref().unchecked_ref();
        let uid = message.uid.as_deref().map_or(JsValue::NULL, JsValue::from_str);
        raw.exec_insert(&self.insert, message.id as f64, &message.nick, &message.text, message.at as f64, &uid)?;
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
                "SELECT * FROM (SELECT id, nick, text, at, uid, deleted FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id",
                vec![SqlStorageValue::from(limit as i64)],
            )?,
            Window::After { since, limit } => self.sql.exec(
                "SELECT id, nick, text, at, uid, deleted FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                vec![SqlStorageValue::from(since.min(MAX_SAFE_INTEGER) as i64), SqlStorageValue::from(limit as i64)],
            )?,
        };
        let rows: Vec<Row> = cursor.to_array()?;
        Ok(rows
            .into_iter()
            .map(|r| ChatMessage { id: r.id, nick: r.nick, text: r.text, at: r.at, deleted: r.deleted != 0, uid: r.uid })
            .collect())
    }
}
