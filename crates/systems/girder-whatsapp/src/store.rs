//! WhatsApp's tables. Devices, chats, members and delivery cursors are on the
//! instance's database; each chat's messages and its sequence counter are on the
//! message shard its id hashes to (jump hash over the configured shards; by default
//! the instance's own database is the one shard).
//!
//! **Order and idempotency.** A message's `seq` comes from its chat's counter row,
//! incremented in the transaction that inserts the message, so a chat's messages are
//! numbered 1, 2, 3, … in commit order (the row lock is held to commit). A resend
//! with the same `(chat, sender, client_id)` finds the stored message and changes
//! nothing.
//!
//! **Offline inbox.** A device's undelivered messages in a chat are those above its
//! cursor (`delivered_seq`, or the member's `joined_seq` when it has none): nothing
//! is copied per recipient, and a device acknowledges cumulatively.

use girder_shard::hash::{BuildError, JumpHash, ShardId};
use girder_shard::router::{Router, RouterError};
use girder_sql::{Db, on_db};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The shard map has no database for a shard (a wiring bug).
    #[error(transparent)]
    Router(#[from] RouterError),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// Its id.
    pub id: String,
    /// `direct` (two members, one chat per pair) or `group`.
    pub kind: String,
    /// Its title (empty for a direct chat).
    pub title: String,
    /// Who created it.
    pub created_by: String,
    /// When, ms since the epoch.
    pub created_ms: i64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its chat.
    pub chat: String,
    /// Its place in the chat: 1, 2, 3, … in commit order.
    pub seq: i64,
    /// Who sent it.
    pub sender: String,
    /// From which of their devices.
    pub device: String,
    /// The sender's id for it (resends with the same id are the same message).
    pub client_id: String,
    /// The text.
    pub body: String,
    /// When it was stored, ms since the epoch.
    pub created_ms: i64,
}

/// How far one device of one member has got in a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The member.
    pub user: String,
    /// Their device.
    pub device: String,
    /// Every message up to this one reached the device.
    pub delivered_seq: i64,
    /// Every message up to this one was read on the device.
    pub read_seq: i64,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its id (the client's choice).
    pub device: String,
    /// First connected, ms since the epoch.
    pub created_ms: i64,
    /// Last connected.
    pub seen_ms: i64,
}

/// Moves a cursor forward (never back), only for a member: `$1` user, `$2` device,
/// `$3` chat, `$4` delivered, `$5` read, `$6` now.
const CURSOR_UPSERT: &str =
    "INSERT INTO wa_cursors (user_id, device, chat, delivered_seq, read_seq, updated_ms)
     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS
         (SELECT 1 FROM wa_members WHERE chat = $3 AND user_id = $1)
     ON CONFLICT (user_id, device, chat) DO UPDATE SET
         delivered_seq = CASE WHEN excluded.delivered_seq > wa_cursors.delivered_seq
                              THEN excluded.delivered_seq ELSE wa_cursors.delivered_seq END,
         read_seq = CASE WHEN excluded.read_seq > wa_cursors.read_seq
                         THEN excluded.read_seq ELSE wa_cursors.read_seq END,
         updated_ms = excluded.updated_ms";

/// Whose cursor: `(user, device, chat)`.
pub type CursorKey = (String, String, String);

/// The message shards' migrations (applied to every shard).
#[must_use]
pub fn message_migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "whatsapp-messages",
        sqlite: sqlx::migrate!("migrations-messages/sqlite"),
        postgres: sqlx::migrate!("migrations-messages/postgres"),
    }
}

/// The tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    shards: Router<JumpHash, Db>,
}

const MESSAGE_COLUMNS: &str = "chat, seq, sender, device, client_id, body, created_ms";

type MessageRow = (String, i64, String, String, String, String, i64);

fn message_of(row: MessageRow) -> Message {
    let (chat, seq, sender, device, client_id, body, created_ms) = row;
    Message { chat, seq, sender, device, client_id, body, created_ms }
}

type ChatRow = (String, String, String, String, i64);

fn chat_of(row: ChatRow) -> Chat {
    let (id, kind, title, created_by, created_ms) = row;
    Chat { id, kind, title, created_by, created_ms }
}

impl Store {
    /// The tables on `db`, messages on `shards` (shard `i` of the list is jump-hash
    /// shard `i`).
    ///
    /// # Errors
    /// The shard list is empty or too long.
    pub fn new(db: Db, shards: Vec<Db>) -> Result<Self, BuildError> {
        let count = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        let map = JumpHash::new(count)?;
        let shards =
            Router::new(map, shards.into_iter().enumerate().map(|(i, db)| (ShardId(i as u32), db)))
                .map_err(|_| BuildError::Empty)?;
        Ok(Self { db, shards })
    }

    /// The instance's database.
    #[must_use]
    pub const fn db(&self) -> &Db {
        &self.db
    }

    /// Every message shard.
    pub fn shards(&self) -> impl Iterator<Item = (ShardId, &Db)> {
        self.shards.shards()
    }

    fn shard(&self, chat: &str) -> Result<&Db> {
        Ok(self.shards.route(chat.as_bytes())?.1)
    }

    // ---- devices ----

    /// Records that `device` of `user` connected now.
    ///
    /// # Errors
    /// The database failed.
    pub async fn touch_device(&self, user: &str, device: &str, now_ms: i64) -> Result<()> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO wa_devices (user_id, device, created_ms, seen_ms) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (user_id, device) DO UPDATE SET seen_ms = excluded.seen_ms",
            )
            .bind(user)
            .bind(device)
            .bind(now_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The devices of `user`, by id.
    ///
    /// # Errors
    /// The database failed.
    pub async fn devices(&self, user: &str) -> Result<Vec<Device>> {
        let rows: Vec<(String, i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT device, created_ms, seen_ms FROM wa_devices WHERE user_id = $1 ORDER BY device LIMIT 1000",
            )
            .bind(user)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(device, created_ms, seen_ms)| Device { device, created_ms, seen_ms })
            .collect())
    }

    /// Forgets `device` of `user` and its cursors; whether it existed.
    ///
    /// # Errors
    /// The database failed.
    pub async fn delete_device(&self, user: &str, device: &str) -> Result<bool> {
        let n = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM wa_devices WHERE user_id = $1 AND device = $2")
                .bind(user)
                .bind(device)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM wa_cursors WHERE user_id = $1 AND device = $2")
                .bind(user)
                .bind(device)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    // ---- chats and members ----

    /// Creates chat `chat` with `members` (the creator among them). A chat with this id
    /// that exists is left as it is and returned with `false`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_chat(&self, chat: &Chat, members: &[String]) -> Result<bool> {
        let created = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "INSERT INTO wa_chats (id, kind, title, created_by, created_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&chat.id)
            .bind(&chat.kind)
            .bind(&chat.title)
            .bind(&chat.created_by)
            .bind(chat.created_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                for member in members {
                    sqlx::query(
                        "INSERT INTO wa_members (chat, user_id, joined_seq, joined_ms) VALUES ($1, $2, 0, $3)
                         ON CONFLICT (chat, user_id) DO NOTHING",
                    )
                    .bind(&chat.id)
                    .bind(member)
                    .bind(chat.created_ms)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            n > 0
        });
        Ok(created)
    }

    /// Chat `chat`, if it exists.
    ///
    /// # Errors
    /// The database failed.
    pub async fn chat(&self, chat: &str) -> Result<Option<Chat>> {
        let row: Option<ChatRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, kind, title, created_by, created_ms FROM wa_chats WHERE id = $1",
            )
            .bind(chat)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(chat_of))
    }

    /// The members of `chat`, by id.
    ///
    /// # Errors
    /// The database failed.
    pub async fn members(&self, chat: &str) -> Result<Vec<String>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT user_id FROM wa_members WHERE chat = $1 ORDER BY user_id")
                .bind(chat)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The seq after which `user` sees `chat`, if a member.
    ///
    /// # Errors
    /// The database failed.
    pub async fn membership(&self, chat: &str, user: &str) -> Result<Option<i64>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT joined_seq FROM wa_members WHERE chat = $1 AND user_id = $2")
                .bind(chat)
                .bind(user)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Adds `user` to `chat`, seeing messages after `joined_seq`; `false` if already in.
    ///
    /// # Errors
    /// The database failed.
    pub async fn add_member(
        &self,
        chat: &str,
        user: &str,
        joined_seq: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let n = on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO wa_members (chat, user_id, joined_seq, joined_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (chat, user_id) DO NOTHING",
            )
            .bind(chat)
            .bind(user)
            .bind(joined_seq)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Removes `user` from `chat` with their cursors; whether they were in.
    ///
    /// # Errors
    /// The database failed.
    pub async fn remove_member(&self, chat: &str, user: &str) -> Result<bool> {
        let n = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM wa_members WHERE chat = $1 AND user_id = $2")
                .bind(chat)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM wa_cursors WHERE chat = $1 AND user_id = $2")
                .bind(chat)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    /// Whether `a` and `b` are members of one chat together.
    ///
    /// # Errors
    /// The database failed.
    pub async fn share_a_chat(&self, a: &str, b: &str) -> Result<bool> {
        let found: Option<i32> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT 1 FROM wa_members x JOIN wa_members y ON x.chat = y.chat
                 WHERE x.user_id = $1 AND y.user_id = $2 LIMIT 1",
            )
            .bind(a)
            .bind(b)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// `user`'s chats with ids after `after`, by id, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn chats_of(&self, user: &str, after: &str, limit: u32) -> Result<Vec<Chat>> {
        let rows: Vec<ChatRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT c.id, c.kind, c.title, c.created_by, c.created_ms
                 FROM wa_members m JOIN wa_chats c ON c.id = m.chat
                 WHERE m.user_id = $1 AND m.chat > $2 ORDER BY m.chat LIMIT $3",
            )
            .bind(user)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(chat_of).collect())
    }

    /// For each chat of `user`: the seq after which `device` still has messages to
    /// receive (its cursor, or the member's joined seq without one).
    ///
    /// # Errors
    /// The database failed.
    pub async fn inbox_starts(&self, user: &str, device: &str) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT m.chat, CASE WHEN c.delivered_seq IS NULL OR c.delivered_seq < m.joined_seq
                                     THEN m.joined_seq ELSE c.delivered_seq END
                 FROM wa_members m
                 LEFT JOIN wa_cursors c ON c.user_id = m.user_id AND c.device = $2 AND c.chat = m.chat
                 WHERE m.user_id = $1 ORDER BY m.chat",
            )
            .bind(user)
            .bind(device)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The start of `device`'s inbox in one `chat`, if `user` is a member.
    ///
    /// # Errors
    /// The database failed.
    pub async fn inbox_start(&self, user: &str, device: &str, chat: &str) -> Result<Option<i64>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT CASE WHEN c.delivered_seq IS NULL OR c.delivered_seq < m.joined_seq
                             THEN m.joined_seq ELSE c.delivered_seq END
                 FROM wa_members m
                 LEFT JOIN wa_cursors c ON c.user_id = m.user_id AND c.device = $2 AND c.chat = m.chat
                 WHERE m.user_id = $1 AND m.chat = $3",
            )
            .bind(user)
            .bind(device)
            .bind(chat)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Moves `device`'s cursors in `chat` forward (never back) to `delivered` and
    /// `read` (reading implies delivery). Returns the cursor after, or `None` when
    /// `user` is not a member.
    ///
    /// # Errors
    /// The database failed.
    pub async fn advance(
        &self,
        user: &str,
        device: &str,
        chat: &str,
        delivered: i64,
        read: i64,
        now_ms: i64,
    ) -> Result<Option<Cursor>> {
        let delivered = delivered.max(read);
        let sql = format!("{CURSOR_UPSERT} RETURNING delivered_seq, read_seq");
        let row: Option<(i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(user)
                .bind(device)
                .bind(chat)
                .bind(delivered)
                .bind(read)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(delivered_seq, read_seq)| Cursor {
            user: user.to_owned(),
            device: device.to_owned(),
            delivered_seq,
            read_seq,
        }))
    }

    /// Moves many cursors forward in one transaction (as [`Store::advance`], without
    /// answers): `(user, device, chat) → (delivered, read)`.
    ///
    /// # Errors
    /// The database failed; none moved.
    pub async fn advance_many(
        &self,
        cursors: &[(CursorKey, (i64, i64))],
        now_ms: i64,
    ) -> Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for ((user, device, chat), (delivered, read)) in cursors {
                sqlx::query(CURSOR_UPSERT)
                    .bind(user)
                    .bind(device)
                    .bind(chat)
                    .bind((*delivered).max(*read))
                    .bind(*read)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every device cursor in `chat`, by user and device.
    ///
    /// # Errors
    /// The database failed.
    pub async fn cursors(&self, chat: &str) -> Result<Vec<Cursor>> {
        let rows: Vec<(String, String, i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT user_id, device, delivered_seq, read_seq FROM wa_cursors WHERE chat = $1
                 ORDER BY user_id, device LIMIT 10000",
            )
            .bind(chat)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, device, delivered_seq, read_seq)| Cursor {
                user,
                device,
                delivered_seq,
                read_seq,
            })
            .collect())
    }

    // ---- messages (on the chat's shard) ----

    /// The last seq of `chat` (0 before its first message).
    ///
    /// # Errors
    /// The database failed.
    pub async fn last_seq(&self, chat: &str) -> Result<i64> {
        let last: Option<i64> = on_db!(self.shard(chat)?, |pool| {
            sqlx::query_scalar("SELECT last_seq FROM wa_chat_seq WHERE chat = $1")
                .bind(chat)
                .fetch_optional(pool)
                .await?
        });
        Ok(last.unwrap_or(0))
    }

    async fn by_client_id(
        &self,
        chat: &str,
        sender: &str,
        client_id: &str,
    ) -> Result<Option<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM wa_messages WHERE chat = $1 AND sender = $2 AND client_id = $3"
        );
        let row: Option<MessageRow> = on_db!(self.shard(chat)?, |pool| {
            sqlx::query_as(&sql)
                .bind(chat)
                .bind(sender)
                .bind(client_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(message_of))
    }

    /// Stores a message as the chat's next, or finds the one `sender` already stored
    /// under `client_id`: `(message, true)` for a resend.
    ///
    /// # Errors
    /// The database failed (nothing stored).
    pub async fn append(
        &self,
        chat: &str,
        sender: &str,
        device: &str,
        client_id: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<(Message, bool)> {
        if let Some(existing) = self.by_client_id(chat, sender, client_id).await? {
            return Ok((existing, true));
        }
        let inserted: Option<i64> = on_db!(self.shard(chat)?, |pool| {
            let mut tx = pool.begin().await?;
            // The counter row's lock is held to commit: seqs follow commit order.
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO wa_chat_seq (chat, last_seq) VALUES ($1, 1)
                 ON CONFLICT (chat) DO UPDATE SET last_seq = wa_chat_seq.last_seq + 1
                 RETURNING last_seq",
            )
            .bind(chat)
            .fetch_one(&mut *tx)
            .await?;
            let n = sqlx::query(
                "INSERT INTO wa_messages (chat, seq, sender, device, client_id, body, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(chat)
            .bind(seq)
            .bind(sender)
            .bind(device)
            .bind(client_id)
            .bind(body)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                tx.commit().await?;
                Some(seq)
            } else {
                // A concurrent resend stored it first; the counter goes back too.
                tx.rollback().await?;
                None
            }
        });
        match inserted {
            Some(seq) => Ok((
                Message {
                    chat: chat.to_owned(),
                    seq,
                    sender: sender.to_owned(),
                    device: device.to_owned(),
                    client_id: client_id.to_owned(),
                    body: body.to_owned(),
                    created_ms: now_ms,
                },
                false,
            )),
            None => {
                let existing = self.by_client_id(chat, sender, client_id).await?;
                existing.map(|m| (m, true)).ok_or(StoreError::Db(sqlx::Error::RowNotFound))
            }
        }
    }

    /// `chat`'s messages after `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn after(&self, chat: &str, after: i64, limit: u32) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM wa_messages WHERE chat = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let rows: Vec<MessageRow> = on_db!(self.shard(chat)?, |pool| {
            sqlx::query_as(&sql)
                .bind(chat)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(message_of).collect())
    }

    /// `chat`'s messages below `before` and above `floor`, newest first, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn before(
        &self,
        chat: &str,
        before: i64,
        floor: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM wa_messages WHERE chat = $1 AND seq < $2 AND seq > $3
             ORDER BY seq DESC LIMIT $4"
        );
        let rows: Vec<MessageRow> = on_db!(self.shard(chat)?, |pool| {
            sqlx::query_as(&sql)
                .bind(chat)
                .bind(before)
                .bind(floor)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(message_of).collect())
    }

    /// Deletes up to `batch` messages created before `cutoff_ms` on every shard;
    /// returns how many went.
    ///
    /// # Errors
    /// A shard failed (the others' deletions stand).
    pub async fn delete_older(&self, cutoff_ms: i64, batch: u32) -> Result<u64> {
        let mut deleted = 0;
        for (_, db) in self.shards.shards() {
            deleted += on_db!(db, |pool| {
                sqlx::query(
                    "DELETE FROM wa_messages WHERE (chat, seq) IN
                         (SELECT chat, seq FROM wa_messages WHERE created_ms < $1 LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(i64::from(batch))
                .execute(pool)
                .await?
                .rows_affected()
            });
        }
        Ok(deleted)
    }
}
