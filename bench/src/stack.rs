//! The two services as child processes: fresh databases, free ports, readiness with a
//! deadline, SIGTERM then SIGKILL, memory (RSS) sampling, and logs to files.
//!
//! Each [`Stack`] creates its own two databases (`bench_orders_<pid>_<n>`,
//! `bench_payments_<pid>_<n>`) and drops them in [`Stack::shutdown`]. Children are
//! spawned with `kill_on_drop`, so a panic or Ctrl-C that drops the stack kills them;
//! the database names are also registered with the process-wide [`Janitor`], which
//! `main` runs after any exit, so a dropped stack leaves no database behind either.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::observe::Observer;

/// Where the binaries are and how to run them.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub orders_bin: PathBuf,
    pub payments_bin: PathBuf,
    /// A URL of the PostgreSQL server (any database): the services' databases are
    /// created next to it.
    pub database_url: String,
    /// `RUST_LOG` of the services.
    pub service_log: String,
    /// `RECONNECT_CAP` of Orders.
    pub reconnect_cap: Duration,
    /// How long a service may take to become ready.
    pub ready_timeout: Duration,
    /// How long a service may take to exit after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// Where service logs go.
    pub out_dir: PathBuf,
}

/// Database names to drop when the process ends, whatever happened to the stacks.
#[derive(Debug, Default)]
pub struct Janitor {
    names: Mutex<Vec<String>>,
}

impl Janitor {
    pub fn global() -> &'static Janitor {
        static JANITOR: OnceLock<Janitor> = OnceLock::new();
        JANITOR.get_or_init(Janitor::default)
    }

    pub fn add(&self, name: &str) {
        self.lock().push(name.to_owned());
    }

    pub fn forget(&self, name: &str) {
        self.lock().retain(|n| n != name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every database still registered.
    pub async fn sweep(&self, database_url: &str) {
        let names: Vec<String> = std::mem::take(&mut *self.lock());
        if names.is_empty() {
            return;
        }
        match admin_pool(database_url).await {
            Ok(admin) => {
                for name in names {
                    if let Err(e) = drop_database(&admin, &name).await {
                        eprintln!("loadgen: could not drop database {name}: {e:#}");
                    }
                }
                admin.close().await;
            }
            Err(e) => eprintln!("loadgen: could not drop databases {names:?}: {e:#}"),
        }
    }
}

/// A pool on the server's `postgres` database, for CREATE/DROP DATABASE.
pub async fn admin_pool(database_url: &str) -> anyhow::Result<PgPool> {
    let options = connect_options(database_url)?.database("postgres");
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL (is it running? see --database-url)")
}

pub fn connect_options(database_url: &str) -> anyhow::Result<PgConnectOptions> {
    use std::str::FromStr;
    PgConnectOptions::from_str(database_url).with_context(|| format!("bad URL {database_url}"))
}

/// The URL of database `name` on the same server as `database_url`.
pub fn database_url_for(database_url: &str, name: &str) -> String {
    // postgres://user@host:port/db?params → replace the path.
    let (base, query) = match database_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (database_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

pub async fn create_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    Janitor::global().add(name);
    sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(admin)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    Ok(())
}

pub async fn drop_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    sqlx::query(AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
    )))
    .execute(admin)
    .await
    .with_context(|| format!("DROP DATABASE {name}"))?;
    Janitor::global().forget(name);
    Ok(())
}

/// A unique database name for this process: `bench_<what>_<pid>_<n>`.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "bench_{what}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nobody listens on right now (bound and released; the service binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What became of one service over a scenario (all its starts).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServiceReport {
    pub name: String,
    pub starts: u32,
    /// The largest VmHWM (peak resident set) of any of its processes, MiB.
    pub peak_rss_mib: f64,
    /// The largest VmRSS seen by sampling every 100 ms, MiB.
    pub max_sampled_rss_mib: f64,
    /// How each process ended.
    pub exits: Vec<String>,
    pub log_lines: u64,
    pub warn_lines: u64,
    pub error_lines: u64,
    pub panics: u64,
    /// Panic lines written after SIGTERM (a shutdown that panics).
    pub panics_at_shutdown: u64,
    /// A few distinct ERROR/WARN messages and panic lines, for the reader.
    pub samples: Vec<String>,
    pub logs: Vec<PathBuf>,
}

/// One running service process.
struct Process {
    child: Child,
    pid: u32,
    log: PathBuf,
    max_rss_kib: Arc<AtomicU64>,
    hwm_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Process {
    /// Keeps the kernel's peak RSS (VmHWM) of the process before it goes.
    fn record_peak(&self) {
        if let Some(kib) = read_status_kib(self.pid, "VmHWM:") {
            self.hwm_kib.fetch_max(kib, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Orders,
    Payments,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Orders => "orders",
            Which::Payments => "payments",
        }
    }
}

/// Orders and Payments on their own fresh databases.
pub struct Stack {
    config: StackConfig,
    admin: PgPool,
    pub orders_db: String,
    pub payments_db: String,
    pub orders_port: u16,
    pub payments_port: u16,
    token: String,
    orders: Option<Process>,
    payments: Option<Process>,
    reports: [ServiceReport; 2],
    http: reqwest::Client,
    observer: Option<Observer>,
    /// Appended to log and report names (`""`, or `-b` for a second instance).
    label: String,
    /// Whether [`Stack::shutdown`] drops the databases (a sibling shares them).
    owns_databases: bool,
}

impl Stack {
    /// Creates the two databases and picks the ports; starts nothing.
    pub async fn new(config: StackConfig) -> anyhow::Result<Stack> {
        for bin in [&config.orders_bin, &config.payments_bin] {
            if !bin.is_file() {
                bail!(
                    "{} does not exist: build it first with `cargo build --release -p orders -p payments` \
                     (or pass --orders-bin/--payments-bin)",
                    bin.display()
                );
            }
        }
        std::fs::create_dir_all(&config.out_dir)
            .with_context(|| format!("creating {}", config.out_dir.display()))?;
        let admin = admin_pool(&config.database_url).await?;
        let orders_db = unique_name("orders");
        let payments_db = unique_name("payments");
        create_database(&admin, &orders_db).await?;
        create_database(&admin, &payments_db).await?;
        let orders_port = free_port()?;
        let mut payments_port = free_port()?;
        while payments_port == orders_port {
            payments_port = free_port()?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        Ok(Stack {
            config,
            admin,
            orders_db,
            payments_db,
            orders_port,
            payments_port,
            token: format!("bench-token-{}", uuid::Uuid::new_v4()),
            orders: None,
            payments: None,
            reports: [
                ServiceReport {
                    name: "orders".into(),
                    ..Default::default()
                },
                ServiceReport {
                    name: "payments".into(),
                    ..Default::default()
                },
            ],
            http,
            observer: None,
            label: String::new(),
            owns_databases: true,
        })
    }

    /// A second instance of each service on the SAME two databases, on new ports, with
    /// the same token: its Orders links to its own Payments (`PAYMENTS_WS_URL`), its
    /// Payments serves pages under its own URL. Its logs and reports are named
    /// `<service><label>`. Its shutdown stops its processes but drops no database.
    pub async fn sibling(&self, label: &str) -> anyhow::Result<Stack> {
        let admin = admin_pool(&self.config.database_url).await?;
        let taken = [self.orders_port, self.payments_port];
        let port = || -> anyhow::Result<u16> {
            loop {
                let p = free_port()?;
                if !taken.contains(&p) {
                    return Ok(p);
                }
            }
        };
        let orders_port = port()?;
        let mut payments_port = port()?;
        while payments_port == orders_port {
            payments_port = port()?;
        }
        let name = |s: &str| ServiceReport {
            name: format!("{s}{label}"),
            ..Default::default()
        };
        Ok(Stack {
            config: self.config.clone(),
            admin,
            orders_db: self.orders_db.clone(),
            payments_db: self.payments_db.clone(),
            orders_port,
            payments_port,
            token: self.token.clone(),
            orders: None,
            payments: None,
            reports: [name("orders"), name("payments")],
            http: self.http.clone(),
            observer: None,
            label: label.to_owned(),
            owns_databases: false,
        })
    }

    pub fn orders_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.orders_port)
    }

    pub fn payments_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.payments_port)
    }

    pub fn orders_database_url(&self) -> String {
        database_url_for(&self.config.database_url, &self.orders_db)
    }

    pub fn payments_database_url(&self) -> String {
        database_url_for(&self.config.database_url, &self.payments_db)
    }

    /// Starts Orders and waits until it is ready: `/readyz` (database and the link to
    /// Payments) when `with_link`, else `/healthz` (Payments is down on purpose).
    pub async fn start_orders(&mut self, with_link: bool) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.config.orders_bin);
        cmd.env("DATABASE_URL", self.orders_database_url())
            .env("ORDERS_ADDR", format!("127.0.0.1:{}", self.orders_port))
            .env(
                "PAYMENTS_WS_URL",
                format!("ws://127.0.0.1:{}/ws", self.payments_port),
            )
            .env("RECONNECT_CAP", humantime_str(self.config.reconnect_cap));
        let ready = if with_link { "/readyz" } else { "/healthz" };
        let url = format!("{}{ready}", self.orders_url());
        self.start(Which::Orders, cmd, &url).await
    }

    /// Starts Payments and waits for its `/readyz`.
    pub async fn start_payments(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.config.payments_bin);
        cmd.env("DATABASE_URL", self.payments_database_url())
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{}", self.payments_port))
            .env("PAYMENTS_PUBLIC_URL", self.payments_url());
        let url = format!("{}/readyz", self.payments_url());
        self.start(Which::Payments, cmd, &url).await
    }

    /// Waits until Orders' `/readyz` answers 200 (its link to Payments is open).
    pub async fn wait_orders_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.orders_url());
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Orders not ready at {url} within {:?}",
                    self.config.ready_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start(&mut self, which: Which, mut cmd: Command, ready: &str) -> anyhow::Result<()> {
        let slot = match which {
            Which::Orders => &self.orders,
            Which::Payments => &self.payments,
        };
        if slot.is_some() {
            bail!("{} is already running", which.name());
        }
        let index = which as usize;
        self.reports[index].starts += 1;
        let log = self.config.out_dir.join(format!(
            "{}{}-{}.log",
            which.name(),
            self.label,
            self.reports[index].starts
        ));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
        let stderr = file.try_clone()?;
        cmd.env("PAYMENTS_TOKEN", &self.token)
            .env("RUST_LOG", &self.config.service_log)
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", which.name()))?;
        let pid = child.id().context("child has no pid")?;
        let max_rss_kib = Arc::new(AtomicU64::new(0));
        let hwm_kib = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn(sample_rss(pid, max_rss_kib.clone(), hwm_kib.clone()));
        self.reports[index].logs.push(log.clone());
        let process = Process {
            child,
            pid,
            log,
            max_rss_kib,
            hwm_kib,
            sampler,
        };
        match which {
            Which::Orders => self.orders = Some(process),
            Which::Payments => self.payments = Some(process),
        }
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            let process = self.process_mut(which).expect("just started");
            if let Some(status) = process.child.try_wait()? {
                let log = process.log.clone();
                self.finish(which, format!("exited at start-up: {status}"), None)
                    .await;
                bail!(
                    "{} exited at start-up ({status}); see {}",
                    which.name(),
                    log.display()
                );
            }
            if let Ok(r) = self.http.get(ready).send().await
                && r.status().as_u16() == 200
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready at {ready} within {:?}",
                    which.name(),
                    self.config.ready_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// Lazily connected pools on both databases (their tables exist once each service
    /// has started once).
    pub fn observer(&mut self) -> anyhow::Result<Observer> {
        if self.observer.is_none() {
            self.observer = Some(Observer::connect_lazy(
                &self.orders_database_url(),
                &self.payments_database_url(),
            )?);
        }
        Ok(self.observer.clone().expect("set above"))
    }

    /// The running process of `which`, if any.
    fn process(&self, which: Which) -> Option<&Process> {
        match which {
            Which::Orders => self.orders.as_ref(),
            Which::Payments => self.payments.as_ref(),
        }
    }

    fn process_mut(&mut self, which: Which) -> Option<&mut Process> {
        match which {
            Which::Orders => self.orders.as_mut(),
            Which::Payments => self.payments.as_mut(),
        }
    }

    pub fn pid(&self, which: Which) -> Option<u32> {
        self.process(which).map(|p| p.pid)
    }

    /// SIGTERM, then SIGKILL after the stop timeout. Returns how it ended.
    pub async fn stop(&mut self, which: Which) -> String {
        let stop_timeout = self.config.stop_timeout;
        let Some(process) = self.process_mut(which) else {
            return "not running".into();
        };
        process.record_peak();
        // What the log holds up to here was written before the stop was asked for.
        let before_stop = std::fs::metadata(&process.log).map_or(0, |m| m.len());
        let asked = Instant::now();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(process.pid.to_string())
            .status();
        let how = match tokio::time::timeout(stop_timeout, process.child.wait()).await {
            Ok(Ok(status)) => format!(
                "SIGTERM: exited after {:.1} s ({status})",
                asked.elapsed().as_secs_f64()
            ),
            Ok(Err(e)) => format!("SIGTERM: wait failed: {e}"),
            Err(_) => {
                let _ = process.child.start_kill();
                let _ = process.child.wait().await;
                format!(
                    "SIGTERM: still running after {:?}, killed (SIGKILL)",
                    stop_timeout
                )
            }
        };
        self.finish(which, how.clone(), Some(before_stop)).await;
        how
    }

    /// SIGKILL (`kill -9`): no shutdown at all. Returns how it ended.
    pub async fn kill(&mut self, which: Which) -> String {
        let stop_timeout = self.config.stop_timeout;
        let Some(process) = self.process_mut(which) else {
            return "not running".into();
        };
        process.record_peak();
        let _ = process.child.start_kill();
        let how = match tokio::time::timeout(stop_timeout, process.child.wait()).await {
            Ok(Ok(status)) => format!("SIGKILL: {status}"),
            Ok(Err(e)) => format!("SIGKILL: wait failed: {e}"),
            Err(_) => "SIGKILL: still not reaped".to_owned(),
        };
        // Everything in its log was written before the kill: no shutdown to tell apart.
        self.finish(which, how.clone(), None).await;
        how
    }

    /// Whether the service's process is running (started and not stopped or killed).
    pub fn is_running(&self, which: Which) -> bool {
        self.process(which).is_some()
    }

    /// Records what the process left: memory, exit, log findings.
    async fn finish(&mut self, which: Which, how: String, stop_offset: Option<u64>) {
        let process = match which {
            Which::Orders => self.orders.take(),
            Which::Payments => self.payments.take(),
        };
        let Some(process) = process else { return };
        process.sampler.abort();
        let report = &mut self.reports[which as usize];
        let mib = |kib: u64| kib as f64 / 1024.0;
        report.peak_rss_mib = report
            .peak_rss_mib
            .max(mib(process.hwm_kib.load(Ordering::Relaxed)));
        report.max_sampled_rss_mib = report
            .max_sampled_rss_mib
            .max(mib(process.max_rss_kib.load(Ordering::Relaxed)));
        report.exits.push(how);
        scan_log(&process.log, report, stop_offset);
    }

    /// Stops both services, closes the pools and drops both databases.
    pub async fn shutdown(mut self) -> Vec<ServiceReport> {
        // Orders first, so its log does not fill with reconnect attempts.
        self.stop(Which::Orders).await;
        self.stop(Which::Payments).await;
        if let Some(observer) = self.observer.take() {
            observer.close().await;
        }
        if self.owns_databases {
            for name in [self.orders_db.clone(), self.payments_db.clone()] {
                if let Err(e) = drop_database(&self.admin, &name).await {
                    eprintln!("loadgen: {e:#}");
                }
            }
        }
        self.admin.close().await;
        self.reports.to_vec()
    }

    /// The reports so far (memory of running processes included).
    pub fn running_rss_mib(&self, which: Which) -> Option<f64> {
        let p = self.process(which)?;
        Some(p.max_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0)
    }
}

fn humantime_str(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Samples VmRSS every 100 ms (and VmHWM, which the kernel keeps as the peak).
async fn sample_rss(pid: u32, max_rss: Arc<AtomicU64>, hwm: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match read_status_kib(pid, "VmRSS:") {
            Some(kib) => {
                max_rss.fetch_max(kib, Ordering::Relaxed);
            }
            None => return,
        }
        if let Some(kib) = read_status_kib(pid, "VmHWM:") {
            hwm.fetch_max(kib, Ordering::Relaxed);
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Counts lines, WARN/ERROR records and panics in a service log (JSON lines, with
/// panics as plain text on stderr); panics past `stop_offset` happened at shutdown.
fn scan_log(path: &Path, report: &mut ServiceReport, stop_offset: Option<u64>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let mut offset = 0u64;
    for line in text.lines() {
        let at_shutdown = stop_offset.is_some_and(|stop| offset >= stop);
        offset += line.len() as u64 + 1;
        report.log_lines += 1;
        let warn = line.contains(r#""level":"WARN""#);
        let error = line.contains(r#""level":"ERROR""#);
        let panic = line.contains("panicked at");
        report.warn_lines += u64::from(warn);
        report.error_lines += u64::from(error);
        if at_shutdown {
            report.panics_at_shutdown += u64::from(panic);
        } else {
            report.panics += u64::from(panic);
        }
        if (warn || error || panic) && report.samples.len() < 8 {
            let text = message_of(line);
            if !report.samples.iter().any(|s| s == &text) {
                report.samples.push(text);
            }
        }
    }
}

/// The level and message (and error field) of a JSON log line, or the line itself.
fn message_of(line: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.chars().take(300).collect();
    };
    let level = value["level"].as_str().unwrap_or("?");
    // Fields are flattened into the object, or nested under "fields".
    let field = |name: &str| {
        value[name]
            .as_str()
            .or(value["fields"][name].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let message = field("message");
    let mut error = field("error");
    if error.is_empty() {
        error = field("reason");
    }
    let mut text = format!("{level}: {message}");
    if !error.is_empty() {
        text.push_str(&format!(" ({error})"));
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_server_and_parameters() {
        assert_eq!(
            database_url_for("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url_for("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(database_url_for("postgres://h:1", "x"), "postgres://h:1/x");
    }

    #[test]
    fn own_process_status_is_readable() {
        assert!(read_status_kib(std::process::id(), "VmRSS:").unwrap() > 0);
    }
}
