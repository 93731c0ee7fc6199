//! Database access: one schema for SQLite (embedded default) and
//! PostgreSQL, versioned migrations applied on start, and serialized write
//! transactions (every mutation of the registry is one transaction).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::crypto::Keyring;

pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbTarget {
    /// `postgres://…`, `postgresql://…`, `sqlite://path`, `sqlite:path`, or a
    /// plain file path. `None` is `./promptops.db`.
    pub fn parse(url: Option<&str>) -> DbTarget {
        match url {
            None => DbTarget::Sqlite(PathBuf::from("promptops.db")),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                DbTarget::Postgres(u.to_string())
            }
            Some(u) => {
                let path = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .unwrap_or(u);
                let path = path.split('?').next().unwrap_or(path);
                DbTarget::Sqlite(PathBuf::from(path))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            DbTarget::Sqlite(_) => Backend::Sqlite,
            DbTarget::Postgres(_) => Backend::Postgres,
        }
    }

    /// The default key file of an embedded database: `<db file>.key`.
    pub fn default_key_file(&self) -> Option<PathBuf> {
        match self {
            DbTarget::Sqlite(p) => {
                let mut s = p.as_os_str().to_owned();
                s.push(".key");
                Some(PathBuf::from(s))
            }
            DbTarget::Postgres(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => format!("sqlite:{}", p.display()),
            DbTarget::Postgres(u) => {
                // Hide a password in the URL.
                match (u.find("://"), u.rfind('@')) {
                    (Some(s), Some(at)) if at > s => {
                        let creds = &u[s + 3..at];
                        let user = creds.split(':').next().unwrap_or("");
                        format!("{}{user}:***{}", &u[..s + 3], &u[at..])
                    }
                    _ => u.clone(),
                }
            }
        }
    }
}

pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    pub target: DbTarget,
    pub keys: Arc<Keyring>,
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("target", &self.target.describe())
            .finish()
    }
}

/// A write transaction: holds the process-wide write lock (and, on
/// PostgreSQL, a transaction-scoped advisory lock shared by every replica),
/// so mutations — revision bumps, event log and audit chain appends — are
/// serialized.
pub struct WriteTx<'a> {
    pub tx: Transaction<'static, sqlx::Any>,
    _guard: MutexGuard<'a, ()>,
}

impl<'a> WriteTx<'a> {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Commit, keeping the write lock until the returned guard is dropped
    /// (so the change can be delivered in order).
    pub async fn commit_locked(self) -> Result<MutexGuard<'a, ()>, sqlx::Error> {
        self.tx.commit().await?;
        Ok(self._guard)
    }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    /// Connect, apply migrations, and open the pool.
    pub async fn open(target: DbTarget, keys: Keyring) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let pool = match &target {
            DbTarget::Sqlite(path) => {
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let mut conn = sqlx::SqliteConnection::connect_with(&opts)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                SQLITE_MIGRATIONS
                    .run(&mut conn)
                    .await
                    .context("applying SQLite migrations")?;
                conn.close().await.ok();
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(15))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA busy_timeout = 10000",
                                "PRAGMA synchronous = FULL",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url(path))
                    .await
                    .with_context(|| format!("opening {}", path.display()))?
            }
            DbTarget::Postgres(url) => {
                use sqlx::ConnectOptions;
                let opts: sqlx::postgres::PgConnectOptions =
                    url.parse().context("parsing the PostgreSQL URL")?;
                let mut conn = tokio::time::timeout(Duration::from_secs(15), opts.connect())
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out connecting to {}", target.describe()))?
                    .with_context(|| format!("connecting to {}", target.describe()))?;
                POSTGRES_MIGRATIONS
                    .run(&mut conn)
                    .await
                    .context("applying PostgreSQL migrations")?;
                conn.close().await.ok();
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(15))
                    .connect(url)
                    .await
                    .with_context(|| format!("connecting to {}", target.describe()))?
            }
        };
        Ok(Db {
            pool,
            backend: target.backend(),
            target,
            keys: Arc::new(keys),
            write_lock: Mutex::new(()),
        })
    }

    /// Begin a serialized write transaction.
    pub async fn write(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        let guard = self.write_lock.lock().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(72620001)")
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        Ok(WriteTx { tx, _guard: guard })
    }

    /// Begin a read transaction that sees one consistent state.
    pub async fn read(&self) -> Result<Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Now as fixed-width RFC 3339 UTC text (microseconds), so text order is
/// time order.
pub fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parse an RFC 3339 time or a plain date (`2025-01-31`, start of day UTC)
/// into the stored format.
pub fn parse_time(s: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(format_time(t));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .ok()
        .map(|d| format_time(d.midnight().assume_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            DbTarget::parse(None),
            DbTarget::Sqlite("promptops.db".into())
        );
        assert_eq!(
            DbTarget::parse(Some("sqlite:///tmp/x.db?mode=rwc")),
            DbTarget::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DbTarget::parse(Some("a/b.db")),
            DbTarget::Sqlite("a/b.db".into())
        );
        assert_eq!(
            DbTarget::parse(Some("postgres://u:secret@h:1/db")).describe(),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(
            DbTarget::parse(Some("x.db")).default_key_file(),
            Some(PathBuf::from("x.db.key"))
        );
    }

    #[test]
    fn times() {
        let t = now();
        assert_eq!(t.len(), 27, "{t}");
        assert_eq!(
            parse_time("2025-01-31").unwrap(),
            "2025-01-31T00:00:00.000000Z"
        );
        assert_eq!(
            parse_time("2025-01-31T10:00:00+02:00").unwrap(),
            "2025-01-31T08:00:00.000000Z"
        );
        assert!(parse_time("yesterday").is_none());
    }
}
