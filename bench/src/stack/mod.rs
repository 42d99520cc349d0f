//! The two services as child processes: fresh databases, free ports, readiness with a
//! deadline, SIGTERM then SIGKILL, memory (RSS) sampling, and logs to files.
//!
//! Each [`Stack`] creates its own two databases (`bench_orders_<pid>_<n>`,
//! `bench_payments_<pid>_<n>`) and drops them in [`Stack::shutdown`]. Children are
//! spawned with `kill_on_drop`, so a panic or Ctrl-C that drops the stack kills them,
//! and [`crate::db::sweep`] (run by `main` after any exit) drops the databases of a
//! stack that was dropped.

mod process;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::time::Instant;

use clap::Args;

use crate::db::{Server, ServerUrl};
use crate::observe::Observer;
use crate::tls::BenchTls;
use process::Service;
pub use process::ServiceReport;

/// How to run the services (options every scenario shares).
#[derive(Debug, Clone, Args)]
pub struct StackOptions {
    /// The Orders binary (default: <target>/release/orders of this workspace).
    #[arg(long, env = "LOADGEN_ORDERS_BIN")]
    pub orders_bin: Option<PathBuf>,
    /// The Payments binary (default: <target>/release/payments of this workspace).
    #[arg(long, env = "LOADGEN_PAYMENTS_BIN")]
    pub payments_bin: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerUrl,
    /// RUST_LOG of the services (their logs go to <out>/<service>-<n>.log, as JSON).
    #[arg(long, default_value = "info")]
    pub service_log: String,
    /// RECONNECT_CAP of Orders, so a link that failed while Payments was down retries
    /// within this long of Payments coming up (the default 10 s would dominate resume).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub reconnect_cap: Duration,
    /// How long a service may take to become ready.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// How long a service may take to exit after SIGTERM before it is killed.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
    /// The link over mutual TLS: Payments serves HTTPS/WSS and requires client
    /// certificates, Orders connects with wss://, loadgen pays the pages with a client
    /// certificate; the CA and certificates are made for the run.
    #[arg(long)]
    pub tls: bool,
}

/// How a stack runs: its options, the binaries, where logs go, the run's TLS.
#[derive(Debug, Clone)]
struct Config {
    options: StackOptions,
    orders_bin: PathBuf,
    payments_bin: PathBuf,
    out_dir: PathBuf,
    tls: Option<BenchTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Orders,
    Payments,
}

/// Orders and Payments on their own fresh databases.
pub struct Stack {
    config: Config,
    server: Server,
    /// The Orders and the Payments database.
    databases: [String; 2],
    pub orders_port: u16,
    pub payments_port: u16,
    token: String,
    services: [Service; 2],
    http: reqwest::Client,
    observer: Option<Observer>,
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
    /// Creates the two databases and picks the ports; starts nothing. Logs (and, with
    /// `--tls`, the run's CA and certificates) go to `out_dir`.
    pub async fn new(options: &StackOptions, out_dir: PathBuf) -> anyhow::Result<Stack> {
        let release = crate::target_dir().join("release");
        let bin = |given: &Option<PathBuf>, name| given.clone().unwrap_or(release.join(name));
        let config = Config {
            options: options.clone(),
            orders_bin: bin(&options.orders_bin, "orders"),
            payments_bin: bin(&options.payments_bin, "payments"),
            out_dir,
            tls: options.tls.then(BenchTls::generate).transpose()?,
        };
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
        let server = Server::connect(&options.server.database_url).await?;
        let databases = [
            server.create_database("orders").await?,
            server.create_database("payments").await?,
        ];
        let token = format!("bench-token-{}", uuid::Uuid::new_v4());
        Stack::on(config, server, databases, token, "")
    }

    /// A second instance of each service on the SAME two databases, on new ports, with
    /// the same token: its Orders links to its own Payments (`PAYMENTS_WS_URL`), its
    /// Payments serves pages under its own URL. Its logs and reports are named
    /// `<service><label>`. Its shutdown stops its processes but drops no database.
    pub async fn sibling(&self, label: &str) -> anyhow::Result<Stack> {
        let server = Server::connect(&self.config.options.server.database_url).await?;
        let (databases, token) = (self.databases.clone(), self.token.clone());
        let mut sibling = Stack::on(self.config.clone(), server, databases, token, label)?;
        sibling.owns_databases = false;
        Ok(sibling)
    }

    fn on(
        config: Config,
        server: Server,
        databases: [String; 2],
        token: String,
        label: &str,
    ) -> anyhow::Result<Stack> {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
        let http = match &config.tls {
            Some(tls) => tls.http(builder),
            None => builder,
        }
        .build()?;
        Ok(Stack {
            config,
            server,
            databases,
            orders_port: free_port()?,
            payments_port: free_port()?,
            token,
            services: ["orders", "payments"].map(|s| Service::new(format!("{s}{label}"))),
            http,
            observer: None,
            owns_databases: true,
            orders_env: Vec::new(),
            payments_env: Vec::new(),
        })
    }

    pub fn orders_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.orders_port)
    }

    pub fn payments_url(&self) -> String {
        let scheme = if self.tls().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.payments_port)
    }

    /// The TLS of the run, if `--tls`.
    pub fn tls(&self) -> Option<&BenchTls> {
        self.config.tls.as_ref()
    }

    /// Where the logs (and the scenario's other files) go.
    pub fn out_dir(&self) -> &std::path::Path {
        &self.config.out_dir
    }

    /// The URL of the service's database.
    pub fn database_url(&self, which: Which) -> String {
        self.server.url_of(&self.databases[which as usize])
    }

    /// Starts Orders and waits until it is ready: its `/readyz` (the database and the
    /// order writer), then, when `with_link`, its link to Payments open (`/healthz`
    /// says so; readiness leaves the link out on purpose).
    pub async fn start_orders(&mut self, with_link: bool) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.config.orders_bin);
        let scheme = if self.tls().is_some() { "wss" } else { "ws" };
        cmd.env("DATABASE_URL", self.database_url(Which::Orders))
            .env("ORDERS_ADDR", format!("127.0.0.1:{}", self.orders_port))
            .env(
                "PAYMENTS_WS_URL",
                format!("{scheme}://127.0.0.1:{}/ws", self.payments_port),
            )
            .env(
                "RECONNECT_CAP",
                format!("{}ms", self.config.options.reconnect_cap.as_millis()),
            );
        if let Some(tls) = &self.config.tls {
            cmd.env("PAYMENTS_CA", &tls.ca)
                .env("ORDERS_TLS_CLIENT_CERT", &tls.orders_cert)
                .env("ORDERS_TLS_CLIENT_KEY", &tls.orders_key);
        }
        cmd.envs(self.orders_env.iter().map(|(k, v)| (k, v)));
        self.start(Which::Orders, cmd).await?;
        if with_link {
            self.wait_ready(Which::Orders, "/healthz").await?;
        }
        Ok(())
    }

    /// Starts Payments and waits for its `/readyz`.
    pub async fn start_payments(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.config.payments_bin);
        cmd.env("DATABASE_URL", self.database_url(Which::Payments))
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{}", self.payments_port))
            .env("PAYMENTS_PUBLIC_URL", self.payments_url());
        if let Some(tls) = &self.config.tls {
            cmd.env("PAYMENTS_TLS_CERT", &tls.payments_cert)
                .env("PAYMENTS_TLS_KEY", &tls.payments_key)
                .env("PAYMENTS_TLS_CLIENT_CA", &tls.ca);
        }
        cmd.envs(self.payments_env.iter().map(|(k, v)| (k, v)));
        self.start(Which::Payments, cmd).await
    }

    async fn start(&mut self, which: Which, mut cmd: Command) -> anyhow::Result<()> {
        cmd.env("PAYMENTS_TOKEN", &self.token)
            .env("RUST_LOG", &self.config.options.service_log)
            .env("LOG_FORMAT", "json");
        self.services[which as usize].spawn(cmd, &self.config.out_dir)?;
        self.wait_ready(which, "/readyz").await
    }

    /// Waits until the service answers `path` with 200 (`/healthz` of Orders: with its
    /// link to Payments connected), while its process runs.
    async fn wait_ready(&mut self, which: Which, path: &str) -> anyhow::Result<()> {
        let base = match which {
            Which::Orders => self.orders_url(),
            Which::Payments => self.payments_url(),
        };
        let url = format!("{base}{path}");
        let link = path == "/healthz";
        let ready_timeout = self.config.options.ready_timeout;
        let deadline = Instant::now() + ready_timeout;
        loop {
            self.services[which as usize].check_alive()?;
            if answers(&self.http, &url, link).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let service = &self.services[which as usize].report.name;
                bail!("{service} not ready at {url} within {ready_timeout:?}");
            }
            let pause = if link { 50 } else { 25 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// SIGTERM, then SIGKILL after the stop timeout. Returns how it ended.
    pub async fn stop(&mut self, which: Which) -> String {
        let timeout = self.config.options.stop_timeout;
        self.services[which as usize].stop(timeout).await
    }

    /// SIGKILL (`kill -9`): no shutdown at all. Returns how it ended.
    pub async fn kill(&mut self, which: Which) -> String {
        let timeout = self.config.options.stop_timeout;
        self.services[which as usize].kill(timeout).await
    }

    /// Whether the service's process is running (started and not stopped or killed).
    pub fn is_running(&self, which: Which) -> bool {
        self.services[which as usize].is_running()
    }

    /// Lazily connected pools on both databases (their tables exist once each service
    /// has started once).
    pub fn observer(&mut self) -> anyhow::Result<Observer> {
        if self.observer.is_none() {
            self.observer = Some(Observer::connect_lazy(
                &self.database_url(Which::Orders),
                &self.database_url(Which::Payments),
            )?);
        }
        Ok(self.observer.clone().expect("set above"))
    }

    /// Stops both services, closes the pools and drops both databases (unless a
    /// sibling): what became of each service.
    pub async fn shutdown(mut self) -> Vec<ServiceReport> {
        // Orders first, so its log does not fill with reconnect attempts.
        self.stop(Which::Orders).await;
        self.stop(Which::Payments).await;
        if let Some(observer) = self.observer.take() {
            observer.close().await;
        }
        if self.owns_databases {
            for name in &self.databases {
                if let Err(e) = self.server.drop_database(name).await {
                    eprintln!("loadgen: {e:#}");
                }
            }
        }
        self.server.close().await;
        self.services.map(|s| s.report).to_vec()
    }
}

/// Whether GET `url` answers 200; with `link`, a body that says the link to Payments
/// is connected (Orders' `/healthz`).
async fn answers(http: &reqwest::Client, url: &str, link: bool) -> bool {
    let Ok(r) = http.get(url).send().await else {
        return false;
    };
    if !link {
        return r.status().as_u16() == 200;
    }
    r.json::<serde_json::Value>()
        .await
        .is_ok_and(|body| body["payments_link"] == "connected")
}

/// A port nobody listens on right now (bound and released; the service binds it next),
/// and never one this process handed out before.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let port = listener.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_default().insert(port) {
            return Ok(port);
        }
    }
}
