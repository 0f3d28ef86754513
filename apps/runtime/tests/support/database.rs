//! PostgreSQL for the tests: which backend the HTTP suite runs on, and a
//! schema of its own for every service under test.
//!
//! `RUNTIME_TEST_BACKEND=postgres` runs the whole HTTP suite on PostgreSQL
//! (`RUNTIME_TEST_DATABASE_URL`, default the local `test` database). Tests
//! that need PostgreSQL skip with a printed note when it does not answer,
//! unless `RUNTIME_TEST_REQUIRE_POSTGRES=1`, which `.ci/run` sets.
//!
//! The note is visible in the default `cargo test` output: the test harness
//! captures what `print!`/`eprint!` write for a test that passes, but not
//! writes to the stderr handle itself, which [`note_skip`] uses.

use std::sync::Arc;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether the HTTP suite runs on PostgreSQL.
pub fn suite_on_postgres() -> bool {
    std::env::var("RUNTIME_TEST_BACKEND").is_ok_and(|backend| backend == "postgres")
}

fn base_url() -> String {
    std::env::var("RUNTIME_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

fn required() -> bool {
    std::env::var("RUNTIME_TEST_REQUIRE_POSTGRES").is_ok_and(|value| value == "1")
}

/// A fresh schema when PostgreSQL answers; `None` (after printing why) when
/// it does not and is not required.
pub fn fresh_schema(test: &str) -> Option<Arc<Schema>> {
    match Schema::create() {
        Ok(schema) => Some(Arc::new(schema)),
        Err(error) if !required() => {
            note_skip(&format!(
                "{test}: PostgreSQL does not answer at {}: {error}",
                base_url()
            ));
            None
        }
        Err(error) => panic!("PostgreSQL is required but does not answer: {error}"),
    }
}

/// Prints `skipped: <why>` past the harness's output capture, so that a
/// skipped test is seen in the default output, not only with
/// `--nocapture`.
pub fn note_skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// A schema of the test database, dropped with everything in it when the
/// last service using it is gone.
pub struct Schema {
    name: String,
}

impl Schema {
    fn create() -> Result<Self, postgres::Error> {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        run_sql(&base_url(), &format!("CREATE SCHEMA {name}"))?;
        Ok(Schema { name })
    }

    /// The URL of the database with this schema first on the search path.
    pub fn url(&self) -> String {
        let base = base_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-csearch_path%3D{}", self.name)
    }

    /// This schema reached through `host:port` instead (a proxy), as a
    /// key-value connection string.
    pub fn url_through(&self, host: &str, port: u16) -> String {
        let base: postgres::Config = base_url().parse().unwrap();
        let user = base.get_user().unwrap_or("postgres");
        let dbname = base.get_dbname().unwrap_or(user);
        format!(
            "host={host} port={port} user={user} dbname={dbname} options='-csearch_path={}'",
            self.name
        )
    }

    /// Where the database listens, as `host:port`.
    pub fn server_addr() -> String {
        let base: postgres::Config = base_url().parse().unwrap();
        let host = match base.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        format!(
            "{host}:{}",
            base.get_ports().first().copied().unwrap_or(5432)
        )
    }

    /// Runs `sql` in this schema, for tests that look at or change the
    /// tables directly.
    pub fn execute(&self, sql: &str) -> Result<(), postgres::Error> {
        run_sql(&self.url(), sql)
    }

    /// One number from `sql` in this schema.
    pub fn count(&self, sql: &str) -> i64 {
        let url = self.url();
        off_runtime(|| {
            let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
            client.query_one(sql, &[]).map(|row| row.get(0))
        })
        .unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = run_sql(&base_url(), &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

/// Runs `sql` on a new connection to `url`.
fn run_sql(url: &str, sql: &str) -> Result<(), postgres::Error> {
    off_runtime(|| postgres::Client::connect(url, postgres::NoTls)?.batch_execute(sql))
}

/// Runs `work` on a thread of its own: the synchronous client may not run
/// on a thread of the tests' async runtime.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().unwrap())
}
