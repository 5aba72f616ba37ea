//! `tp-daemon bench`: the measurement itself is the `vtp-bench` crate; this
//! module gives it what only the daemon knows ([`vtp_bench::Target`]): the
//! operator's config, opening its token, the key ring in its journal, and a
//! throwaway config for the measured daemon (the same token and keys, a
//! fresh journal, loopback). See docs/performance.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use vtp_bench::{BenchOptions, OpenTp, Target};
use vtp_device::{TpKeys, TrustedParty};

use crate::config::{Config, PinSpec};
use crate::journal::Journal;
use crate::operator::{open_token, resolve_key};

/// Measure the TP of the config at `config`.
pub fn run(config: &Path, opts: &BenchOptions) -> anyhow::Result<()> {
    opts.check()?;
    let target = DaemonTarget {
        config: Config::load(config)?,
    };
    vtp_bench::run(opts, &target)
}

/// The TP as `tp.toml` describes it.
pub struct DaemonTarget {
    pub config: Config,
}

impl Target for DaemonTarget {
    fn open(&self) -> anyhow::Result<OpenTp> {
        let token = open_token(&self.config)?;
        let signing_ref = self.config.keys.signing.as_ref().ok_or_else(|| {
            anyhow!(
                "config file {}: [keys] `signing` is not set",
                self.config.path.display()
            )
        })?;
        let signing = resolve_key(&self.config, &token, signing_ref, "signing", true)?;
        let ring = Journal::open_read_only(&self.config.data_dir)?.key_ring()?;
        let keys = ring
            .tp_keys(signing)
            .map_err(|e| anyhow!("the key ring in {}: {e}", self.config.data_dir.display()))?;
        let tp = TrustedParty::open(
            Arc::clone(&token),
            keys.clone(),
            &self.config.name,
            self.config.policy.clone(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )?;
        Ok(OpenTp { token, tp, keys })
    }

    /// A copy of the operator's config that serves the same token and keys
    /// from a fresh journal in `scratch`, on loopback, with room for the
    /// idle connections.
    fn scratch_config(
        &self,
        keys: &TpKeys,
        scratch: &Path,
        connections: usize,
    ) -> anyhow::Result<PathBuf> {
        let text = std::fs::read_to_string(&self.config.path)
            .with_context(|| format!("cannot read {}", self.config.path.display()))?;
        let mut doc: toml_edit::DocumentMut = text
            .parse()
            .with_context(|| format!("cannot parse {}", self.config.path.display()))?;
        let path = |p: &Path| toml_edit::value(p.display().to_string());
        doc["data_dir"] = path(&scratch.join("data"));
        doc["listen"] = toml_edit::value("127.0.0.1:0");
        // The bench asks for metrics on a free port with --metrics-listen.
        doc.remove("metrics_listen");
        {
            let token = doc["token"]
                .as_table_mut()
                .ok_or_else(|| anyhow!("no [token] in {}", self.config.path.display()))?;
            token["module"] = path(&self.config.module);
            if let PinSpec::File(p) = &self.config.pin {
                token["pin_file"] = path(p);
            }
            if let Some(p) = &self.config.softhsm2_conf {
                token["softhsm2_conf"] = path(p);
            }
            if let Some(p) = &self.config.kryoptic_conf {
                token["kryoptic_conf"] = path(p);
            }
        }
        // The fresh journal's key ring: imported from these (the legacy form).
        let mut enc = toml_edit::Array::new();
        for k in &keys.encryption {
            enc.push(k.to_string());
        }
        doc["keys"]["encryption"] = toml_edit::value(enc);
        doc["keys"]["current"] = toml_edit::value(keys.current.to_string());
        let conns = (connections as i64).max(self.config.limits.max_connections as i64);
        doc["limits"]["max_connections"] = toml_edit::value(conns);
        doc["limits"]["max_connections_per_ip"] = toml_edit::value(conns);
        let out = scratch.join("tp.toml");
        std::fs::write(&out, doc.to_string())
            .with_context(|| format!("cannot write {}", out.display()))?;
        Ok(out)
    }

    /// This program: `tp-daemon serve` runs the measured daemon.
    fn daemon_program(&self) -> anyhow::Result<PathBuf> {
        std::env::current_exe().context("cannot find this program")
    }
}
