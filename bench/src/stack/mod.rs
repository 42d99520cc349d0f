//! The two services as child processes: fresh databases, free ports, readiness with a
//! deadline, SIGTERM then SIGKILL, memory (RSS) sampling, and logs to files.
//!
//! Each [`Stack`] creates its own two databases (`bench_orders_<pid>_<n>`,
//! `bench_payments_<pid>_<n>`) and drops them in [`Stack::shutdown`]. Children are
//! spawned with `kill_on_drop`, so a panic or Ctrl-C that drops the stack kills them;
//! the database names are also registered with the process-wide [`Janitor`], which
//! `main` runs after any exit, so a dropped stack leaves no database behind either.

mod databases;
mod process;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::process::Command;
use tokio::time::Instant;

use crate::observe::Observer;

pub use databases::{
    Janitor, admin_pool, connect_options, create_database, database_url_for, drop_database,
    free_port, unique_name,
};
pub use process::humantime_str;
use process::{Process, sample_rss};
pub use process::{ServiceReport, Which, read_status_kib};

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
    /// The link (and the page) over mutual TLS (`--tls`).
    pub tls: Option<crate::tls::BenchTls>,
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
    /// Environment set on Orders after the stack's own (`fleet`: the link through the
    /// load balancer, `DRAIN_PERIOD`).
    pub orders_env: Vec<(String, String)>,
    /// Environment set on Payments after the stack's own (`fleet`: the public URL of
    /// the load balancer, `DRAIN_PERIOD`).
    pub payments_env: Vec<(String, String)>,
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
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
        let http = match &config.tls {
            Some(tls) => tls.http(builder),
            None => builder,
        }
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
            orders_env: Vec::new(),
            payments_env: Vec::new(),
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
            orders_env: self.orders_env.clone(),
            payments_env: self.payments_env.clone(),
        })
    }

    pub fn orders_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.orders_port)
    }

    pub fn payments_url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.payments_port)
    }

    /// The TLS of the run, if `--tls`.
    pub fn tls(&self) -> Option<&crate::tls::BenchTls> {
        self.config.tls.as_ref()
    }

    pub fn orders_database_url(&self) -> String {
        database_url_for(&self.config.database_url, &self.orders_db)
    }

    pub fn payments_database_url(&self) -> String {
        database_url_for(&self.config.database_url, &self.payments_db)
    }

    /// Starts Orders and waits until it is ready: its `/readyz` (the database and the
    /// order writer), then, when `with_link`, its link to Payments open (`/healthz`
    /// says so; readiness leaves the link out on purpose).
    pub async fn start_orders(&mut self, with_link: bool) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.config.orders_bin);
        cmd.env("DATABASE_URL", self.orders_database_url())
            .env("ORDERS_ADDR", format!("127.0.0.1:{}", self.orders_port))
            .env(
                "PAYMENTS_WS_URL",
                format!("ws://127.0.0.1:{}/ws", self.payments_port),
            )
            .env("RECONNECT_CAP", humantime_str(self.config.reconnect_cap));
        if let Some(tls) = &self.config.tls {
            cmd.env(
                "PAYMENTS_WS_URL",
                format!("wss://127.0.0.1:{}/ws", self.payments_port),
            )
            .env("PAYMENTS_CA", &tls.ca)
            .env("ORDERS_TLS_CLIENT_CERT", &tls.orders_cert)
            .env("ORDERS_TLS_CLIENT_KEY", &tls.orders_key);
        }
        cmd.envs(self.orders_env.iter().map(|(k, v)| (k, v)));
        let url = format!("{}/readyz", self.orders_url());
        self.start(Which::Orders, cmd, &url).await?;
        if with_link {
            self.wait_orders_ready().await?;
        }
        Ok(())
    }

    /// Starts Payments and waits for its `/readyz`.
    pub async fn start_payments(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.config.payments_bin);
        cmd.env("DATABASE_URL", self.payments_database_url())
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{}", self.payments_port))
            .env("PAYMENTS_PUBLIC_URL", self.payments_url());
        if let Some(tls) = &self.config.tls {
            cmd.env("PAYMENTS_TLS_CERT", &tls.payments_cert)
                .env("PAYMENTS_TLS_KEY", &tls.payments_key)
                .env("PAYMENTS_TLS_CLIENT_CA", &tls.ca);
        }
        cmd.envs(self.payments_env.iter().map(|(k, v)| (k, v)));
        let url = format!("{}/readyz", self.payments_url());
        self.start(Which::Payments, cmd, &url).await
    }

    /// Waits until Orders' link to Payments is open (`/healthz`'s `payments_link`).
    pub async fn wait_orders_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.orders_url());
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && let Ok(body) = r.json::<serde_json::Value>().await
                && body["payments_link"] == "connected"
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
}
