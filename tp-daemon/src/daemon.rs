//! `tp-daemon serve`: start-up checks, the runtime, signals and reloads.
//!
//! - **One daemon per data directory:** an exclusive lock on
//!   `DATA_DIR/tp-daemon.lock`, held until exit ([`crate::data_lock`]).
//! - **Root:** refused unless `--allow-root` or `VTP_ALLOW_ROOT=1` (the TP
//!   needs no privilege: it binds a high port and talks to a token).
//! - **SIGTERM / SIGINT:** stop accepting, finish every request in flight
//!   (a resolution that reached the token is committed to the journal),
//!   then exit 0. See [`crate::server`].
//! - **SIGHUP:** re-read `tp.toml` and the key ring, re-check the keys,
//!   re-sign the TP card, and serve it from then on. Token, module,
//!   `softhsm2_conf`, `data_dir`, `listen`, `metrics_listen` and `[limits]`
//!   need a restart: a reload that changes them is refused (logged, the old
//!   state stays). A reload that fails for any reason keeps the old state.
//! - **Card refresh:** every
//!   [`card_refresh_secs`](vtp_protocol::tp_card::Policy::card_refresh_secs)
//!   (a sixteenth of the horizon, at most a day) the daemon re-signs its
//!   card with the same keys and policy: recipients accept deadlines only up
//!   to a card's horizon from its signing, so a card must stay young.
//!   Refreshes and SIGHUP reloads run one at a time, and a refresh never
//!   undoes a reload.
//! - **systemd:** `READY=1` on `NOTIFY_SOCKET` once the token, the journal
//!   and both sockets are open, `STOPPING=1` at SIGTERM ([`crate::notify`]);
//!   the health probe behind `/healthz` runs from then on ([`crate::health`]).
//! - **stdout:** `listening on ADDR` (and `metrics on ADDR` when enabled),
//!   for scripts; everything else is a structured log on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use tracing::{error, info, warn};
use vtp_device::Token;

use crate::clock::{Clock, OFFSET_ENV};
use crate::config::Config;
use crate::data_lock::DataDirLock;
use crate::journal::keyring::actor;
use crate::journal::Journal;
use crate::metrics::{KeyTimes, Metrics, MetricsServer};
use crate::notify::Notifier;
use crate::operator::{build_live, open_token, resign_live};
use crate::server::Server;
use crate::service::device_pool::DevicePool;
use crate::service::Service;

/// Environment variable equivalent to `--allow-root`.
pub const ALLOW_ROOT_ENV: &str = "VTP_ALLOW_ROOT";

/// What `serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub allow_root: bool,
}

/// Refuse to run as root unless allowed.
pub fn check_not_root(allow_root: bool) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(());
    }
    if !allow_root {
        bail!(
            "refusing to run as root: the TP daemon needs no privileges, and a compromise \
             would get them all. Run it as an unprivileged user (e.g. `vtp`, see \
             deploy/tp-daemon.service), or pass --allow-root (or set {ALLOW_ROOT_ENV}=1) if \
             you really mean to"
        );
    }
    warn!("running as root because --allow-root / {ALLOW_ROOT_ENV} was given");
    Ok(())
}

pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    check_not_root(opts.allow_root)?;
    let clock = Clock::from_env()?;
    if clock.offset_secs() != 0 {
        warn!(
            offset_secs = clock.offset_secs(),
            "!!! {OFFSET_ENV} is set: the TP's clock is SHIFTED. This is a TEST HOOK; deadlines \
             are judged on the shifted clock. Never set it in production. !!!"
        );
    }
    // TEST HOOKS (crate::faults): inert unless VTP_TEST_FAULT or
    // VTP_TEST_DEVICE_FAULT is set; then a loud warning.
    crate::faults::install_from_env()?;
    let notifier = Arc::new(Notifier::from_env());
    // Everything that touches the environment happens before the runtime
    // starts threads (SOFTHSM2_CONF is read at C_Initialize).
    let config = Config::load(&opts.config)?;
    // Before the token: a second daemon must not even log in.
    let data_lock = DataDirLock::acquire(&config.data_dir)?;
    let token = open_token(&config)?;
    let journal = Journal::open(&config.data_dir)?;
    let who = actor("tp-daemon serve");
    let live = build_live(&config, &token, &journal, clock, &who)?;
    let stats = journal.stats()?;
    info!(
        tp = %live.tp.card().id(),
        current_key = %live.tp.keys().current,
        encryption_keys = live.tp.keys().encryption.len(),
        journal = %journal.path().display(),
        resolved = stats.resolved,
        invalid = stats.invalid,
        unclaimed = stats.unclaimed,
        require_subscription = config.require_subscription,
        "trusted party ready"
    );
    let listen = opts.listen.unwrap_or(config.listen);
    let metrics_listen = opts.metrics_listen.or(config.metrics_listen);
    let metrics = Arc::new(Metrics::new());
    let pool = DevicePool::start(config.limits.device_threads())
        .context("cannot start the device threads")?;
    info!(
        device_threads = pool.size(),
        "device operations run on a fixed set of threads"
    );
    let service = Arc::new(Service::new(
        live,
        journal,
        clock,
        Arc::clone(&metrics),
        pool,
        config.limits.commit_delay(),
    )?);
    publish_key_times(&service, clock);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(listen, Arc::clone(&service), config.limits.clone())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = server.local_addr()?;
        let metrics_server = match metrics_listen {
            Some(m) => Some(
                MetricsServer::bind(m, Arc::clone(&metrics))
                    .await
                    .with_context(|| format!("cannot listen on {m} (metrics_listen)"))?,
            ),
            None => None,
        };
        let metrics_addr = metrics_server
            .as_ref()
            .map(|m| m.local_addr())
            .transpose()?;
        let shutdown = {
            let (signal, n) = (shutdown_signal()?, Arc::clone(&notifier));
            async move {
                signal.await;
                n.notify("STOPPING=1\nSTATUS=draining: finishing the requests in flight");
            }
        };
        let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
        let reloader = reload_on_sighup(
            opts.config.clone(),
            config,
            Arc::clone(&token),
            Arc::clone(&service),
            clock,
            Arc::clone(&one_at_a_time),
        )?;
        let refresher = refresh_card_periodically(
            Arc::clone(&token),
            Arc::clone(&service),
            clock,
            one_at_a_time,
        );
        {
            let mut text = format!("listening on {addr}\n");
            if let Some(m) = metrics_addr {
                text.push_str(&format!("metrics on {m}\n"));
            }
            // A reader that went away must not stop the daemon.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
        info!(%addr, metrics = ?metrics_addr, "listening");
        let metrics_task = metrics_server.map(|m| tokio::spawn(m.run()));
        let health = crate::health::spawn(Arc::clone(&token), Arc::clone(&service));
        notifier.notify(&format!(
            "READY=1\nSTATUS=serving on {addr}{}\nMAINPID={}",
            metrics_addr.map_or(String::new(), |m| format!(", metrics on {m}")),
            std::process::id()
        ));
        server.run(shutdown).await;
        // Every answered claim is committed; commit what is still queued.
        let s = Arc::clone(&service);
        let _ = tokio::task::spawn_blocking(move || s.shutdown()).await;
        reloader.abort();
        refresher.abort();
        health.abort();
        if let Some(t) = metrics_task {
            t.abort();
        }
        info!("exiting");
        drop(data_lock);
        Ok(())
    })
}

/// Completes at the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received: draining"),
            _ = int.recv() => info!("SIGINT received: draining"),
        }
    })
}

/// Spawn the task that reloads on every SIGHUP, one reload (or card
/// refresh) at a time.
fn reload_on_sighup(
    path: PathBuf,
    running: Config,
    token: Arc<Token>,
    service: Arc<Service>,
    clock: Clock,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(tokio::spawn(async move {
        let running = Arc::new(running);
        while hup.recv().await.is_some() {
            let _turn = one_at_a_time.lock().await;
            info!(config = %path.display(), "SIGHUP received: reloading the config and the key ring");
            let (p, r, t, s) = (
                path.clone(),
                Arc::clone(&running),
                Arc::clone(&token),
                Arc::clone(&service),
            );
            let result = tokio::task::spawn_blocking(move || reload(&p, &r, &t, &s, clock)).await;
            let ok = matches!(result, Ok(Ok(())));
            service.metrics().reload(ok);
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(error = %format!("{e:#}"), "reload failed; still serving the previous card and key ring")
                }
                Err(e) => {
                    error!(error = %e, "reload task failed; still serving the previous state")
                }
            }
        }
    }))
}

/// Spawn the task that re-signs the served card whenever it is older than
/// its policy's
/// [`card_refresh_secs`](vtp_protocol::tp_card::Policy::card_refresh_secs).
/// A failed refresh keeps the old card and is retried a minute later (or
/// sooner, for short horizons).
fn refresh_card_periodically(
    token: Arc<Token>,
    service: Arc<Service>,
    clock: Clock,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut retry_in = None;
        loop {
            let wait = retry_in.take().unwrap_or_else(|| {
                let card = service.card();
                let every = card.policy().card_refresh_secs();
                let age = clock.now().saturating_sub(card.body().created);
                every.saturating_sub(age).max(1)
            });
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            let _turn = one_at_a_time.lock().await;
            let live = service.live();
            let card = live.tp.card();
            let every = card.policy().card_refresh_secs();
            if clock.now().saturating_sub(card.body().created) < every {
                continue; // a reload signed a new card meanwhile
            }
            let (t, s) = (Arc::clone(&token), Arc::clone(&service));
            let result = tokio::task::spawn_blocking(move || {
                resign_live(
                    &live,
                    &t,
                    s.journal(),
                    clock,
                    &actor("tp-daemon serve (card refresh)"),
                )
            })
            .await;
            match result {
                Ok(Ok(live)) => {
                    info!(
                        current_key = %live.tp.keys().current,
                        created = live.tp.card().body().created,
                        "re-signed the TP card (refresh)"
                    );
                    service.replace_live(live);
                    publish_key_times(&service, clock);
                }
                Ok(Err(e)) => {
                    error!(error = %format!("{e:#}"), "card refresh failed; still serving the previous card");
                    retry_in = Some(every.min(60));
                }
                Err(e) => {
                    error!(error = %e, "card refresh task failed; still serving the previous card");
                    retry_in = Some(every.min(60));
                }
            }
        }
    })
}

fn reload(
    path: &std::path::Path,
    running: &Config,
    token: &Arc<Token>,
    service: &Service,
    clock: Clock,
) -> anyhow::Result<()> {
    let new = Config::load(path)?;
    if new.restart_only() != running.restart_only() {
        bail!(
            "the token, module, softhsm2_conf or data_dir changed in {}: restart the daemon to \
             apply that",
            path.display()
        );
    }
    if new.pin != running.pin {
        warn!("the PIN source changed: it is used from the next restart (or re-login) on");
    }
    if new.listen != running.listen
        || new.metrics_listen != running.metrics_listen
        || new.limits != running.limits
    {
        warn!("listen, metrics_listen and [limits] take effect at the next restart");
    }
    let live = build_live(
        &new,
        token,
        service.journal(),
        clock,
        &actor("tp-daemon serve (SIGHUP)"),
    )?;
    let old = service.card();
    let card = live.tp.card().clone();
    info!(
        tp = %card.id(),
        current_key = %live.tp.keys().current,
        encryption_keys = live.tp.keys().encryption.len(),
        require_subscription = live.require_subscription,
        identity_changed = card.id() != old.id(),
        "reloaded: serving a new TP card"
    );
    if card.id() != old.id() {
        warn!("the TP's signing key changed: this is a NEW TP identity; envelopes made for the old one are refused");
    }
    service.replace_live(live);
    publish_key_times(service, clock);
    Ok(())
}

/// Tell the metrics when the keys now served were made (key-age gauges).
/// Best effort: a journal that cannot say leaves the signing key's age out.
fn publish_key_times(service: &Service, clock: Clock) {
    let live = service.live();
    let keys = live.tp.keys();
    let current = live.ring.get(keys.current);
    let signing_made = service
        .journal()
        .key_first_seen(keys.signing)
        .unwrap_or_else(|e| {
            warn!(error = %e, "cannot read when the signing key was made (key-age metric)");
            None
        });
    service.metrics().serving_keys(KeyTimes {
        clock,
        signing: keys.signing,
        signing_made,
        current: keys.current,
        current_made: current.map(|k| k.created_at),
        current_since: current.and_then(|k| k.current_since),
    });
}
