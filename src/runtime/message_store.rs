//! A room's storage in its Durable Object's SQLite database: the message history, nick
//! reservations, settings, and (through `moderation_store`) bans, mutes and the audit trail. One insert per message;
//! `history::trim_cutoff` says when to drop old ones. Writes are synchronous, and the runtime
//! holds back every frame sent after a write until that write is durable, so a message that
//! was broadcast (or echoed to its sender) is on disk.
//!
//! The tables are created by the first write, not before: reading a room that never had one
//! writes nothing, so asking about any number of unknown rooms stores nothing.

use crate::chat::history::{trim_cutoff, LastClear, Window};
use crate::chat::held::HeldPost;
use crate::chat::messages::{Change, History, Stored};
use crate::chat::protocol::{counts_from_json, ChatMessage, ErrorCode};
use crate::chat::room::Reservation;
use std::cell::Cell;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::JsString;
use worker::{SqlCursor, SqlStorage, SqlStorageValue};

#[wasm_bindgen]
extern "C" {
    /// `ctx.storage.sql` seen only for an `exec` with the insert's bindings as plain
    /// arguments: `worker`'s general `exec` builds a JS array of them one call at a time.
    type RawSql;

    #[wasm_bindgen(method, catch, js_name = exec)]
    #[allow(clippy::too_many_arguments)]
    fn exec_insert(
        this: &RawSql,
        query: &JsString,
        id: f64,
        nick: &str,
        text: &str,
        at: f64,
        uid: &JsValue,
        seq: f64,
        sender: &str,
        cid: &JsValue,
        reply_to: &JsValue,
    ) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = exec)]
    fn exec_with(this: &RawSql, query: &JsString, value: &str) -> Result<JsValue, JsValue>;
}

/// The setting that keeps a cleared history's last id and time: `"ID AT"`.
const CLEARED_AT: &str = "cleared_at";
/// The setting that keeps a cleared history's last sequence number.
const CLEARED_SEQ: &str = "cleared_seq";

const INSERT: &str =
    "INSERT INTO messages (id, nick, text, at, uid, seq, sender, cid, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Many rows in one statement, from a JSON array of `INSERT`'s values in its order: a statement
/// costs far more than a row.
const INSERT_ALL: &str = "INSERT INTO messages (id, nick, text, at, uid, seq, sender, cid, reply_to) \
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8 \
    FROM json_each(?)";

/// The columns a `Row` reads.
const COLUMNS: &str = "id, nick, text, at, uid, deleted, seq, reply_to, edited_at, reactions";

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

/// A message as `COLUMNS` reads it (plus its sender where a query adds that column).
struct Row {
    id: u64,
    nick: String,
    text: String,
    at: u64,
    uid: Option<String>,
    deleted: bool,
    seq: Option<u64>,
    reply_to: Option<u64>,
    edited_at: Option<u64>,
    /// The counts as JSON, null when there are none.
    reactions: Option<String>,
    /// Read only where the room decides on a change; never sent.
    sender: Option<String>,
}

impl Row {
    /// Reads `COLUMNS`, then a `sender` column if `with_sender`.
    fn read(columns: &mut Columns, with_sender: bool) -> worker::Result<Row> {
        Ok(Row {
            id: columns.int()?,
            nick: columns.text()?,
            text: columns.text()?,
            at: columns.int()?,
            uid: columns.optional_text()?,
            deleted: columns.int()? != 0,
            seq: columns.optional_int()?,
            reply_to: columns.optional_int()?,
            edited_at: columns.optional_int()?,
            reactions: columns.optional_text()?,
            sender: if with_sender { columns.optional_text()? } else { None },
        })
    }

    fn message(self) -> ChatMessage {
        let reactions = self.reactions.and_then(|json| counts_from_json(&json)).unwrap_or_default();
        ChatMessage {
            id: self.id,
            nick: self.nick,
            text: self.text,
            at: self.at,
            seq: self.seq.unwrap_or(self.id),
            deleted: self.deleted,
            uid: self.uid,
            reply_to: self.reply_to,
            edited_at: self.edited_at,
            reactions,
            cid: None,
        }
    }
}

/// The rows of a query, read from `raw()` column by column in the order the query names them:
/// `to_array` would deserialise them with serde_wasm_bindgen, which costs the module ~30 KB.
pub(super) fn rows(cursor: SqlCursor) -> worker::Result<Vec<Columns>> {
    cursor.raw().map(|row| row.map(|values| Columns(values.into_iter()))).collect()
}

/// One row's values, taken in order.
pub(super) struct Columns(std::vec::IntoIter<SqlStorageValue>);

impl Columns {
    pub(super) fn text(&mut self) -> worker::Result<String> {
        self.optional_text()?.ok_or_else(|| unexpected("text"))
    }

    pub(super) fn optional_text(&mut self) -> worker::Result<Option<String>> {
        match self.0.next() {
            Some(SqlStorageValue::Null) => Ok(None),
            Some(SqlStorageValue::String(text)) => Ok(Some(text)),
            _ => Err(unexpected("text")),
        }
    }

    pub(super) fn int(&mut self) -> worker::Result<u64> {
        self.optional_int()?.ok_or_else(|| unexpected("an integer"))
    }

    pub(super) fn optional_int(&mut self) -> worker::Result<Option<u64>> {
        match self.0.next() {
            Some(SqlStorageValue::Null) => Ok(None),
            Some(SqlStorageValue::Integer(n)) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(unexpected("an integer")),
        }
    }
}

fn unexpected(what: &str) -> worker::Error {
    worker::Error::RustError(format!("a stored column is not {what}"))
}

/// A message's numbers cross into SQLite as JS numbers, exact only up to 2^53 - 1.
fn exact_in_js(message: &ChatMessage) -> worker::Result<()> {
    if message.id > MAX_SAFE_INTEGER || message.at > MAX_SAFE_INTEGER || message.seq > MAX_SAFE_INTEGER {
        return Err(worker::Error::RustError(format!("message {} is beyond JS's exact integers", message.id)));
    }
    Ok(())
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

    // Out of line: a new room's first join never runs it (see `fetch` in chat_room.rs).
    #[inline(never)]
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
        // Rooms created before tickets, moderation and message changes lack these columns.
        for (column, declaration) in [
            ("uid", "uid TEXT"),
            ("deleted", "deleted INTEGER NOT NULL DEFAULT 0"),
            ("seq", "seq INTEGER"),
            ("sender", "sender TEXT"),
            ("cid", "cid TEXT"),
            ("reply_to", "reply_to INTEGER"),
            ("edited_at", "edited_at INTEGER"),
            ("reactions", "reactions TEXT"),
        ] {
            if self.sql.exec(&format!("SELECT {column} FROM messages LIMIT 0"), None).is_err() {
                self.sql.exec(&format!("ALTER TABLE messages ADD COLUMN {declaration}"), None)?;
                if column == "seq" {
                    // Before sequence numbers a message's only change was its post.
                    self.sql.exec("UPDATE messages SET seq = id", None)?;
                }
            }
        }
        // One message per sender and cid, for as long as the message is stored: a resend finds it.
        self.sql.exec(
            "CREATE UNIQUE INDEX IF NOT EXISTS messages_cid ON messages (sender, cid) WHERE cid IS NOT NULL",
            None,
        )?;
        // No index on seq: a room keeps at most RETAINED + TRIM_EVERY messages, so the reads by seq (a
        // resume, the room's start) scan a thousand rows, while every stored batch paid for the index's
        // page in its commit (10 % of the room's CPU per delivery in rooms of 10, BENCHMARKS.md).
        self.sql.exec("DROP INDEX IF EXISTS messages_seq", None)?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS reactions (
                message INTEGER NOT NULL,
                emoji TEXT NOT NULL,
                sender TEXT NOT NULL,
                PRIMARY KEY (message, emoji, sender)
            )",
            None,
        )?;
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

    /// The id and time of the newest message and the latest sequence number, or zeros for a
    /// room without messages. Reads only.
    pub fn last(&self) -> worker::Result<(u64, u64, u64)> {
        let tables = rows(self.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'messages'", None)?)?;
        if tables.is_empty() {
            self.schema.set(false);
            return Ok((0, 0, 0));
        }
        self.stored_last()
    }

    /// `last` for a room that has storage. Out of line, like `create_schema`: a new room's first join
    /// never runs it, and V8 compiles a WASM function only when it is first called.
    #[inline(never)]
    fn stored_last(&self) -> worker::Result<(u64, u64, u64)> {
        // A room that has storage gets the tables and columns it may lack from older versions.
        self.create_schema()?;
        let stored = match rows(self.sql.exec("SELECT id, at FROM messages ORDER BY id DESC LIMIT 1", None)?)?.pop() {
            Some(mut last) => (last.int()?, last.int()?),
            None => (0, 0),
        };
        let cleared = self.setting(CLEARED_AT)?.and_then(|value| {
            let (id, at) = value.split_once(' ')?;
            Some((id.parse().ok()?, at.parse().ok()?))
        });
        let (id, at) = cleared.map_or(stored, |cleared: (u64, u64)| stored.max(cleared));
        // The newest message holds the latest change but after a clear; trims only take older ones.
        let seq = match rows(self.sql.exec("SELECT MAX(seq) FROM messages", None)?)?.pop() {
            Some(mut row) => row.optional_int()?.unwrap_or(0),
            None => 0,
        };
        let cleared_seq = self.setting(CLEARED_SEQ)?.and_then(|value| value.parse().ok()).unwrap_or(0);
        Ok((id, at, seq.max(cleared_seq)))
    }

    /// A room setting (slow mode, the address salt, the id a cleared history ended at).
    pub fn setting(&self, key: &str) -> worker::Result<Option<String>> {
        if !self.schema.get() {
            return Ok(None);
        }
        let mut rows = rows(self.sql.exec("SELECT value FROM settings WHERE key = ?", vec![key.into()])?)?;
        rows.pop().map(|mut row| row.text()).transpose()
    }

    pub fn set_setting(&self, key: &str, value: &str) -> worker::Result<()> {
        self.ensure_schema()?;
        self.sql.exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", vec![key.into(), value.into()])?;
        Ok(())
    }

    /// Erases message `id`'s text and reactions, keeping its id, nick and time as a tombstone
    /// changed at `seq`. Returns its author's nick, or `None` when there is no such message (or
    /// it is deleted already).
    pub fn tombstone(&self, id: u64, seq: u64) -> worker::Result<Option<String>> {
        if !self.schema.get() {
            return Ok(None);
        }
        let mut rows = rows(self.sql.exec(
            "UPDATE messages SET text = '', deleted = 1, edited_at = NULL, reactions = NULL, seq = ?
             WHERE id = ? AND deleted = 0 RETURNING nick",
            vec![int(seq), int(id)],
        )?)?;
        if !rows.is_empty() {
            self.sql.exec("DELETE FROM reactions WHERE message = ?", vec![int(id)])?;
        }
        rows.pop().map(|mut row| row.text()).transpose()
    }

    /// Stores a change the room decided (see `messages::Change`). False when its message is
    /// gone (deleted meanwhile, or trimmed).
    pub fn apply(&self, change: &Change) -> worker::Result<bool> {
        self.ensure_schema()?;
        match change {
            Change::Delete { id, seq, .. } => Ok(self.tombstone(*id, *seq)?.is_some()),
            Change::Edit { id, text, edited_at, seq } => {
                let query = "UPDATE messages SET text = ?, edited_at = ?, seq = ? WHERE id = ? AND deleted = 0 RETURNING id";
                let bindings = vec![text.as_str().into(), int(*edited_at), int(*seq), int(*id)];
                Ok(!rows(self.sql.exec(query, bindings)?)?.is_empty())
            }
            Change::React { id, emoji, sender, added, counts, seq } => {
                let bindings = vec![int(*id), emoji.as_str().into(), sender.as_str().into()];
                if *added {
                    self.sql.exec("INSERT OR IGNORE INTO reactions (message, emoji, sender) VALUES (?, ?, ?)", bindings)?;
                } else {
                    self.sql.exec("DELETE FROM reactions WHERE message = ? AND emoji = ? AND sender = ?", bindings)?;
                }
                let counts = match counts.is_empty() {
                    true => SqlStorageValue::Null,
                    false => serde_json::to_string(counts).map_err(|e| worker::Error::RustError(e.to_string()))?.into(),
                };
                let query = "UPDATE messages SET reactions = ?, seq = ? WHERE id = ? AND deleted = 0 RETURNING id";
                Ok(!rows(self.sql.exec(query, vec![counts, int(*seq), int(*id)])?)?.is_empty())
            }
        }
    }

    /// Deletes every message, remembering the last id, time and sequence number so that they
    /// keep growing.
    pub fn clear(&self, last_id: u64, last_at: u64, last_seq: u64) -> worker::Result<()> {
        self.set_setting(CLEARED_AT, &format!("{last_id} {last_at}"))?;
        self.set_setting(CLEARED_SEQ, &last_seq.to_string())?;
        self.sql.exec("DELETE FROM messages", None)?;
        self.sql.exec("DELETE FROM reactions", None)?;
        Ok(())
    }

    /// Where the history stood when it was last cleared, if it ever was.
    pub fn last_clear(&self) -> worker::Result<Option<LastClear>> {
        let id = self.setting(CLEARED_AT)?.and_then(|value| value.split_once(' ')?.0.parse().ok());
        let seq = self.setting(CLEARED_SEQ)?.and_then(|value| value.parse().ok());
        Ok(id.map(|id| LastClear { id, seq: seq.unwrap_or(0) }))
    }

    /// Every nick reserved for a ticket identity in this room.
    pub fn reservations(&self) -> worker::Result<Vec<Reservation>> {
        if !self.schema.get() {
            return Ok(Vec::new());
        }
        let rows = rows(self.sql.exec("SELECT nick_key, user FROM reservations", None)?)?;
        rows.into_iter().map(|mut row| Ok(Reservation { nick_key: row.text()?, user: row.text()? })).collect()
    }

    pub fn reserve(&self, reservation: &Reservation) -> worker::Result<()> {
        self.ensure_schema()?;
        self.sql.exec(
            "INSERT OR REPLACE INTO reservations (nick_key, user) VALUES (?, ?)",
            vec![reservation.nick_key.as_str().into(), reservation.user.as_str().into()],
        )?;
        Ok(())
    }

    /// Stores a new message from `sender` (its key), with the `cid` it named it by.
    fn insert(&self, message: &ChatMessage, sender: &str, cid: Option<&str>) -> worker::Result<()> {
        self.ensure_schema()?;
        exact_in_js(message)?;
        let raw: &RawSql = self.sql.as_ref().unchecked_ref();
        let uid = message.uid.as_deref().map_or(JsValue::NULL, JsValue::from_str);
        let cid = cid.map_or(JsValue::NULL, JsValue::from_str);
        let reply_to = message.reply_to.map_or(JsValue::NULL, |id| JsValue::from_f64(id.min(MAX_SAFE_INTEGER) as f64));
        raw.exec_insert(
            &self.insert,
            message.id as f64,
            &message.nick,
            &message.text,
            message.at as f64,
            &uid,
            message.seq as f64,
            sender,
            &cid,
            &reply_to,
        )?;
        Ok(())
    }

    /// Stores `posts` with one statement: all of them, or (on an error) none. Then drops what fell
    /// out of the window (`history::trim_cutoff`); a failed trim is only logged.
    pub fn insert_all<T>(&self, posts: &[HeldPost<T>]) -> worker::Result<()> {
        match posts {
            [post] => self.insert(&post.message, &post.sender, post.cid.as_deref())?,
            posts => self.insert_rows(posts)?,
        }
        if let Some(cutoff) = posts.iter().filter_map(|post| trim_cutoff(post.message.id)).max() {
            if let Err(error) = self.trim(cutoff) {
                worker::console_error!("edge-chat: trimming history failed: {error}");
            }
        }
        Ok(())
    }

    fn insert_rows<T>(&self, posts: &[HeldPost<T>]) -> worker::Result<()> {
        self.ensure_schema()?;
        let mut rows = Vec::with_capacity(posts.len());
        for HeldPost { message, sender, cid, .. } in posts {
            exact_in_js(message)?;
            let reply_to = message.reply_to.map(|id| id.min(MAX_SAFE_INTEGER));
            let ChatMessage { id, nick, text, at, uid, seq, .. } = message;
            rows.push((id, nick, text, at, uid, seq, sender, cid, reply_to));
        }
        let rows = serde_json::to_string(&rows).map_err(|error| worker::Error::RustError(error.to_string()))?;
        let raw: &RawSql = self.sql.as_ref().unchecked_ref();
        raw.exec_with(&JsString::from(INSERT_ALL), &rows)?;
        Ok(())
    }

    /// Deletes every message with an id at or below `cutoff`, and their reactions: their cids
    /// go with them.
    fn trim(&self, cutoff: u64) -> worker::Result<()> {
        self.sql.exec("DELETE FROM messages WHERE id <= ?", vec![int(cutoff)])?;
        self.sql.exec("DELETE FROM reactions WHERE message <= ?", vec![int(cutoff)])?;
        Ok(())
    }

    /// The messages of `window`, oldest first. Call `last` first: without the table, none.
    pub fn read(&self, window: Window) -> worker::Result<Vec<ChatMessage>> {
        if !self.schema.get() {
            return Ok(Vec::new());
        }
        let cursor = match window {
            Window::Latest { limit } => self.sql.exec(
                &format!("SELECT * FROM (SELECT {COLUMNS} FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id"),
                vec![int(limit.into())],
            )?,
            Window::After { since, limit } => self.sql.exec(
                &format!("SELECT {COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?"),
                vec![int(since), int(limit.into())],
            )?,
            Window::Before { before, limit } => self.sql.exec(
                &format!("SELECT * FROM (SELECT {COLUMNS} FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?) ORDER BY id"),
                vec![int(before), int(limit.into())],
            )?,
            Window::Changed { after, limit } => self.sql.exec(
                &format!("SELECT * FROM (SELECT {COLUMNS} FROM messages WHERE seq > ? ORDER BY seq LIMIT ?) ORDER BY id"),
                vec![int(after), int(limit.into())],
            )?,
        };
        rows(cursor)?.iter_mut().map(|row| Ok(Row::read(row, false)?.message())).collect()
    }

    fn stored(&self, id: u64) -> worker::Result<Option<Stored>> {
        if !self.schema.get() {
            return Ok(None);
        }
        let query = format!("SELECT {COLUMNS}, sender FROM messages WHERE id = ?");
        let Some(mut columns) = rows(self.sql.exec(&query, vec![int(id)])?)?.pop() else { return Ok(None) };
        let mut row = Row::read(&mut columns, true)?;
        let sender = row.sender.take();
        let reactors = rows(self.sql.exec("SELECT emoji, sender FROM reactions WHERE message = ? ORDER BY rowid", vec![int(id)])?)?
            .into_iter()
            .map(|mut row| Ok((row.text()?, row.text()?)))
            .collect::<worker::Result<_>>()?;
        Ok(Some(Stored { message: row.message(), sender, reactors }))
    }

    fn stored_by_cid(&self, sender: &str, cid: &str) -> worker::Result<Option<ChatMessage>> {
        if !self.schema.get() {
            return Ok(None);
        }
        let query = format!("SELECT {COLUMNS} FROM messages WHERE sender = ? AND cid = ?");
        let mut rows = rows(self.sql.exec(&query, vec![sender.into(), cid.into()])?)?;
        rows.first_mut().map(|row| Ok(Row::read(row, false)?.message())).transpose()
    }
}

/// The room reads its stored history through this when it decides on a change.
impl History for MessageStore {
    fn message(&self, id: u64) -> Result<Option<Stored>, ErrorCode> {
        self.stored(id).map_err(unavailable("reading a message"))
    }

    fn by_cid(&self, sender: &str, cid: &str) -> Result<Option<ChatMessage>, ErrorCode> {
        self.stored_by_cid(sender, cid).map_err(unavailable("looking up a cid"))
    }
}

fn unavailable(what: &'static str) -> impl Fn(worker::Error) -> ErrorCode {
    move |error| {
        worker::console_error!("edge-chat: {what} failed: {error}");
        ErrorCode::Unavailable
    }
}

/// An id, seq or time as SQLite takes it: exact only up to 2^53 - 1, where they are clamped.
fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::from(n.min(MAX_SAFE_INTEGER) as i64)
}
