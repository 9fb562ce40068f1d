//! Creating and dropping whole databases, for `abridge up` and the test kit.

use abridge_core::settings::Secret;
use sqlx::{Connection, PgConnection};

use crate::{Context, Result, StoreError};

/// Creates database `name` on the server of `admin_url` (optionally as a copy of
/// `template`), unless it exists. Names are checked, not quoted: `[a-z0-9_]` only.
pub async fn create_database(admin_url: &Secret, name: &str, template: Option<&str>) -> Result<()> {
    check_name(name)?;
    if let Some(t) = template {
        check_name(t)?;
    }
    let mut conn = PgConnection::connect(admin_url.expose())
        .await
        .context("connect to the admin database")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .context("look for database")?;
    if exists {
        return Ok(());
    }
    let sql = match template {
        Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
        None => format!("CREATE DATABASE {name}"),
    };
    // Concurrent clones of one template can collide ("being accessed by other users"): retry.
    let mut tries = 0;
    loop {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if tries < 50
                    && e.as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|c| c == "55006") =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e)
                if e.as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "42P04") =>
            {
                return Ok(()); // duplicate_database: someone else made it
            }
            Err(cause) => {
                return Err(StoreError::Query {
                    context: "create database",
                    cause,
                });
            }
        }
    }
}

/// Drops database `name` if it exists, disconnecting its sessions.
pub async fn drop_database(admin_url: &Secret, name: &str) -> Result<()> {
    check_name(name)?;
    let mut conn = PgConnection::connect(admin_url.expose())
        .await
        .context("connect to the admin database")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .context("drop database")?;
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            context: "check database name",
            message: format!("invalid database name {name:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's mistake is not the database being away: nothing to back off from.
    #[tokio::test]
    async fn an_invalid_name_is_the_callers_mistake_not_an_outage() {
        let admin = Secret::new("postgres://postgres@127.0.0.1:1/postgres");
        let e = create_database(&admin, "Not A Name", None)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{e:?}");
        assert!(!e.is_unavailable(), "{e}");
    }
}
