//! A room's bans, mutes and audit trail, in the same SQLite storage as its messages (whose
//! store creates every table on the first write). Sanctions that have ended are dropped when
//! the room loads them, so nothing but a wake the room has anyway cleans up.

use crate::chat::moderation::{Sanction, SanctionKind, Target};
use crate::runtime::message_store::{rows, MessageStore};
use serde::Serialize;
use worker::SqlStorageValue;

/// How many audit entries `GET /chat/ROOM/admin/audit` returns, newest first.
pub const AUDIT_PAGE: i64 = 100;

/// One moderation action, as the audit trail keeps it.
#[derive(Debug, Serialize)]
pub struct AuditEntry {
    pub at: u64,
    pub action: String,
    pub target: Option<String>,
    pub by: String,
}

fn kind_name(kind: SanctionKind) -> &'static str {
    match kind {
        SanctionKind::Ban => "ban",
        SanctionKind::Mute => "mute",
    }
}

fn target_parts(target: &Target) -> (&'static str, &str) {
    match target {
        Target::User(user) => ("user", user),
        Target::Address(address) => ("address", address),
    }
}

impl MessageStore {
    /// The sanctions still in force at `now`, after deleting those that ended.
    pub fn sanctions(&self, now: u64) -> worker::Result<Vec<Sanction>> {
        if !self.has_schema() {
            return Ok(Vec::new());
        }
        let now = SqlStorageValue::from(now as i64);
        self.sql.exec("DELETE FROM sanctions WHERE until IS NOT NULL AND until <= ?", vec![now])?;
        let mut sanctions = Vec::new();
        for mut row in rows(self.sql.exec("SELECT kind, target_kind, target, nick, until FROM sanctions", None)?)? {
            let (kind, target_kind, target) = (row.text()?, row.text()?, row.text()?);
            let kind = match kind.as_str() {
                "ban" => SanctionKind::Ban,
                "mute" => SanctionKind::Mute,
                _ => continue,
            };
            let target = match target_kind.as_str() {
                "user" => Target::User(target),
                "address" => Target::Address(target),
                _ => continue,
            };
            sanctions.push(Sanction { kind, target, nick: row.text()?, until: row.optional_int()? });
        }
        Ok(sanctions)
    }

    pub fn impose(&self, sanction: &Sanction) -> worker::Result<()> {
        self.ensure_schema()?;
        let (target_kind, target) = target_parts(&sanction.target);
        self.sql.exec(
            "INSERT OR REPLACE INTO sanctions (kind, target_kind, target, nick, until) VALUES (?, ?, ?, ?, ?)",
            vec![
                kind_name(sanction.kind).into(),
                target_kind.into(),
                target.into(),
                sanction.nick.as_str().into(),
                sanction.until.map(|until| until as i64).into(),
            ],
        )?;
        Ok(())
    }

    pub fn lift(&self, sanction: &Sanction) -> worker::Result<()> {
        let (target_kind, target) = target_parts(&sanction.target);
        self.sql.exec(
            "DELETE FROM sanctions WHERE kind = ? AND target_kind = ? AND target = ?",
            vec![kind_name(sanction.kind).into(), target_kind.into(), target.into()],
        )?;
        Ok(())
    }

    pub fn audit(&self, entry: &AuditEntry) -> worker::Result<()> {
        self.ensure_schema()?;
        self.sql.exec(
            "INSERT INTO audit (at, action, target, by) VALUES (?, ?, ?, ?)",
            vec![
                (entry.at as i64).into(),
                entry.action.as_str().into(),
                entry.target.as_deref().into(),
                entry.by.as_str().into(),
            ],
        )?;
        Ok(())
    }

    /// The newest audit entries, newest first.
    pub fn audit_trail(&self) -> worker::Result<Vec<AuditEntry>> {
        if !self.has_schema() {
            return Ok(Vec::new());
        }
        rows(self.sql.exec("SELECT at, action, target, by FROM audit ORDER BY seq DESC LIMIT ?", vec![AUDIT_PAGE.into()])?)?
            .into_iter()
            .map(|mut row| Ok(AuditEntry { at: row.int()?, action: row.text()?, target: row.optional_text()?, by: row.text()? }))
            .collect()
    }
}
