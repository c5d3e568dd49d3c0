//! Where centres, items, stock and orders live: SQLite (embedded) or PostgreSQL
//! (shared by several instances). The SQL text is shared (`$N` placeholders work
//! on both); the engines differ only in DDL and in how an order locks rows
//! (see `order.rs`).
//!
//! Invariant kept by the database itself as a backstop: `quantity >= 0` is a
//! `CHECK` constraint, so even a buggy code path cannot commit negative stock.

use girder_cache::GetError;
use girder_sql::{Db, on_db};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// The largest stock level a centre may hold of one sku.
pub const STOCK_MAX: i64 = 1_000_000;

/// A distribution centre.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Center {
    /// Its id.
    pub id: i64,
    /// Its display name.
    pub name: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

/// A sellable item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stock-keeping unit: the item's id.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: i64,
}

/// One line of a stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The item.
    pub sku: String,
    /// Units ordered.
    pub quantity: i64,
    /// Unit price at the time of the order, in cents.
    pub price_cents: i64,
}

/// A stored (accepted) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub id: i64,
    /// The centre it was fulfilled from.
    pub center_id: i64,
    /// Who ordered.
    pub user: String,
    /// `optimistic` or `row_lock`.
    pub strategy: String,
    /// Sum of `quantity * price_cents` over the lines.
    pub total_cents: i64,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Transaction attempts it took (1 = no retry).
    pub attempts: i64,
    /// The lines, sku-sorted.
    pub lines: Vec<OrderLine>,
}

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or is unreachable; the source says how.
    #[error("database")]
    Database(#[from] sqlx::Error),
    /// A read through the availability cache failed: its loader's error (a
    /// `StoreError`, shared by every waiter of the load) is the source.
    #[error("availability cache")]
    Cache(#[source] GetError<StoreError>),
    /// The centre index refused an update or a search (a bug: every input is
    /// validated first).
    #[error("centre index")]
    Index(#[source] girder_geo::index::GeoError),
    /// A broken invariant of this crate (a bug), named by the message: the cache
    /// was asked about a query never registered, or answered with the wrong shape.
    #[error("internal error: {0}")]
    Invariant(&'static str),
}

/// The store, on the instance's one pool.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

/// The settings table holding GoPuff's shared keys.
pub(crate) const SETTINGS_TABLE: &str = "gopuff_settings";

/// The per-centre stock query, cached by the availability path under its
/// `QueryKey`; the text is the key's identity, so it is defined once.
pub const STOCK_QUERY: &str =
    "SELECT sku, quantity FROM gopuff_inventory WHERE center_id = $1 ORDER BY sku";
/// The centre scan each instance loads its nearby index from.
pub const CENTERS_QUERY: &str = "SELECT id, name, lat, lon FROM gopuff_centers ORDER BY id";
/// The most centres one load reads (and the nearby index holds).
pub const CENTERS_SCAN_MAX: i64 = 100_000;

impl Store {
    /// The store on `db`, whose tables the server has migrated
    /// ([`crate::migrations`]).
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool it runs on.
    #[must_use]
    pub const fn db(&self) -> &Db {
        &self.db
    }

    /// The engine's name, for logs and metrics.
    #[must_use]
    pub const fn engine(&self) -> &'static str {
        self.db.engine()
    }

    /// Creates a centre.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_center(
        &self,
        name: &str,
        lat: f64,
        lon: f64,
        now_ms: i64,
    ) -> Result<Center, StoreError> {
        let id: i64 = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "INSERT INTO gopuff_centers (name, lat, lon, created_at_ms) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(name)
            .bind(lat)
            .bind(lon)
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(Center { id, name: name.to_owned(), lat, lon })
    }

    /// One page of centres in id order, strictly after `after`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_centers(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Center>, StoreError> {
        let rows = on_db!(&self.db, |pool| {
            sqlx::query(
                "SELECT id, name, lat, lon FROM gopuff_centers WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(center_from_row)
            .collect::<Result<Vec<_>, _>>()
        });
        Ok(rows?)
    }

    /// Every centre (up to [`CENTERS_SCAN_MAX`]), for the nearby index: the result of
    /// [`CENTERS_QUERY`].
    ///
    /// # Errors
    /// Database failures.
    pub async fn all_centers(&self) -> Result<Vec<Center>, StoreError> {
        let sql = format!("{CENTERS_QUERY} LIMIT {CENTERS_SCAN_MAX}");
        let rows = on_db!(&self.db, |pool| {
            sqlx::query(&sql)
                .fetch_all(pool)
                .await?
                .iter()
                .map(center_from_row)
                .collect::<Result<Vec<_>, _>>()
        });
        Ok(rows?)
    }

    /// Whether centre `id` exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn center_exists(&self, id: i64) -> Result<bool, StoreError> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query("SELECT 1 FROM gopuff_centers WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
                .is_some()
        }))
    }

    /// Creates an item. Returns `false` if the sku exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_item(&self, item: &Item) -> Result<bool, StoreError> {
        let done = on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO gopuff_items (sku, name, price_cents) VALUES ($1, $2, $3) \
                 ON CONFLICT (sku) DO NOTHING",
            )
            .bind(&item.sku)
            .bind(&item.name)
            .bind(item.price_cents)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Whether item `sku` exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn item_exists(&self, sku: &str) -> Result<bool, StoreError> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query("SELECT 1 FROM gopuff_items WHERE sku = $1")
                .bind(sku)
                .fetch_optional(pool)
                .await?
                .is_some()
        }))
    }

    /// Sets the stock of `sku` at `center` (creating the row), bumping its
    /// version so optimistic orders that read the old level retry.
    ///
    /// # Errors
    /// Database failures (an unknown centre or sku is a foreign-key failure;
    /// callers check existence first for a clear answer).
    pub async fn set_stock(&self, center: i64, sku: &str, quantity: i64) -> Result<(), StoreError> {
        debug_assert!((0..=STOCK_MAX).contains(&quantity));
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO gopuff_inventory (center_id, sku, quantity, version) \
                 VALUES ($1, $2, $3, 0) ON CONFLICT (center_id, sku) DO UPDATE \
                 SET quantity = excluded.quantity, version = gopuff_inventory.version + 1",
            )
            .bind(center)
            .bind(sku)
            .bind(quantity)
            .execute(pool)
            .await
            .map(drop)?;
        });
        Ok(())
    }

    /// Adds `add` units of `sku` at `center` atomically (creating the row) and
    /// returns the new level, or `None` (nothing changed) if it would exceed
    /// [`STOCK_MAX`].
    ///
    /// # Errors
    /// Database failures.
    pub async fn restock(
        &self,
        center: i64,
        sku: &str,
        add: i64,
    ) -> Result<Option<i64>, StoreError> {
        debug_assert!((1..=STOCK_MAX).contains(&add));
        let level: Option<i64> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "INSERT INTO gopuff_inventory (center_id, sku, quantity, version) \
                 VALUES ($1, $2, $3, 0) ON CONFLICT (center_id, sku) DO UPDATE \
                 SET quantity = gopuff_inventory.quantity + excluded.quantity, \
                     version = gopuff_inventory.version + 1 \
                 WHERE gopuff_inventory.quantity + excluded.quantity <= $4 \
                 RETURNING quantity",
            )
            .bind(center)
            .bind(sku)
            .bind(add)
            .bind(STOCK_MAX)
            .fetch_optional(pool)
            .await?
        });
        Ok(level)
    }

    /// The stock of every sku at `center`, sku-sorted: the result of [`STOCK_QUERY`].
    ///
    /// # Errors
    /// Database failures.
    pub async fn center_stock(&self, center: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = on_db!(&self.db, |pool| {
            sqlx::query(STOCK_QUERY)
                .bind(center)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok::<_, sqlx::Error>((r.try_get("sku")?, r.try_get("quantity")?)))
                .collect::<Result<Vec<_>, _>>()
        });
        Ok(rows?)
    }

    /// The stock of `sku` at `center`, from the database (no cache).
    ///
    /// # Errors
    /// Database failures.
    pub async fn stock(&self, center: i64, sku: &str) -> Result<Option<i64>, StoreError> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT quantity FROM gopuff_inventory WHERE center_id = $1 AND sku = $2",
            )
            .bind(center)
            .bind(sku)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Order `id` with its lines.
    ///
    /// # Errors
    /// Database failures.
    pub async fn get_order(&self, id: i64) -> Result<Option<Order>, StoreError> {
        let mut orders = self.orders_where("o.id = $1", id, i64::MAX, 1).await?;
        Ok(orders.pop())
    }

    /// One page of `center`'s orders, newest (highest id) first, strictly before
    /// order id `before`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_center_orders(
        &self,
        center: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.orders_where("o.center_id = $1", center, before.unwrap_or(i64::MAX), limit).await
    }

    /// Orders matching `filter` (on `$1`) with id below `$2`, newest first, with
    /// their lines (one query: a page is at most a few thousand line rows).
    async fn orders_where(
        &self,
        filter: &str,
        value: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "WITH page AS (SELECT o.id FROM gopuff_orders o WHERE {filter} AND o.id < $2 \
             ORDER BY o.id DESC LIMIT $3) \
             SELECT o.id, o.center_id, o.user_name, o.strategy, o.total_cents, o.created_at_ms, \
                    o.attempts, l.sku, l.quantity, l.price_cents \
             FROM page JOIN gopuff_orders o ON o.id = page.id \
             JOIN gopuff_order_lines l ON l.order_id = o.id \
             ORDER BY o.id DESC, l.sku"
        );
        let rows = on_db!(&self.db, |pool| {
            let rows = sqlx::query(&sql)
                .bind(value)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut orders: Vec<Order> = Vec::new();
            for r in &rows {
                let id: i64 = r.try_get("id")?;
                if orders.last().is_none_or(|o| o.id != id) {
                    orders.push(Order {
                        id,
                        center_id: r.try_get("center_id")?,
                        user: r.try_get("user_name")?,
                        strategy: r.try_get("strategy")?,
                        total_cents: r.try_get("total_cents")?,
                        created_at_ms: r.try_get("created_at_ms")?,
                        attempts: r.try_get("attempts")?,
                        lines: Vec::new(),
                    });
                }
                if let Some(order) = orders.last_mut() {
                    order.lines.push(OrderLine {
                        sku: r.try_get("sku")?,
                        quantity: r.try_get("quantity")?,
                        price_cents: r.try_get("price_cents")?,
                    });
                }
            }
            Ok::<_, sqlx::Error>(orders)
        });
        Ok(rows?)
    }
}

fn center_from_row<R: Row>(row: &R) -> Result<Center, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Center {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        lat: row.try_get("lat")?,
        lon: row.try_get("lon")?,
    })
}
