//! Where dependencies come from: the npm and JSR registries and the hosts of
//! `https:` imports, from the operator's settings. A registry left unset is
//! Deno's own default, learned from Deno itself (the first time it is needed,
//! by watching which URL an offline `deno info` tries), so this code names no
//! registry.

use std::path::PathBuf;

use super::imports::ImportHosts;
use super::settings::CheckerSettings;

#[derive(Debug, Clone)]
pub struct Registries {
    pub hosts: ImportHosts,
    /// `SKIFF_NPM_REGISTRY`, or Deno's default (learned).
    pub npm: Option<url::Url>,
    /// `SKIFF_JSR_URL`, or Deno's default (learned).
    pub jsr: Option<url::Url>,
    /// Whether `npm`/`jsr` came from the settings (then they are passed to Deno).
    pub npm_set: bool,
    pub jsr_set: bool,
    /// Hosts that may resolve to private or loopback addresses.
    pub trusted: Vec<String>,
    /// Extra CA certificates (PEM) trusted for registries and module hosts.
    pub ca: Option<PathBuf>,
}

impl Registries {
    pub fn from_settings(s: &CheckerSettings) -> Self {
        Self {
            hosts: ImportHosts::parse(&s.import_hosts),
            npm_set: s.npm_registry.is_some(),
            jsr_set: s.jsr_url.is_some(),
            npm: s.npm_registry.clone(),
            jsr: s.jsr_url.clone(),
            trusted: s
                .egress_trust
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            ca: s.import_ca.clone(),
        }
    }

    /// Which registries Deno uses (every step: a lock file names them).
    pub fn registry_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let (true, Some(u)) = (self.npm_set, &self.npm) {
            env.push(("NPM_CONFIG_REGISTRY".into(), u.to_string()));
        }
        if let (true, Some(u)) = (self.jsr_set, &self.jsr) {
            env.push(("JSR_URL".into(), u.to_string()));
        }
        env
    }

    /// Deno's own import gate (`--allow-import=…`), the inner layer under
    /// the egress proxy: the module hosts and the JSR registry.
    pub fn allow_import_flag(&self) -> String {
        let mut hosts: Vec<String> = self
            .hosts
            .entries()
            .iter()
            .map(|(h, p)| {
                if *p == 443 {
                    h.clone()
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        if let Some(j) = &self.jsr
            && let (Some(h), Some(p)) = (j.host_str(), j.port_or_known_default())
        {
            hosts.push(if p == 443 {
                h.to_owned()
            } else {
                format!("{h}:{p}")
            });
        }
        format!("--allow-import={}", hosts.join(","))
    }

    /// Environment for Deno's registry clients in the resolve step.
    pub fn deno_env(&self) -> Vec<(String, String)> {
        let mut env = self.registry_env();
        if let Some(ca) = &self.ca {
            env.push(("DENO_CERT".into(), ca.display().to_string()));
        }
        // Deno trusts its own roots only unless told; the host's store holds
        // the operator's CAs.
        let store = std::env::var("DENO_TLS_CA_STORE").unwrap_or_else(|_| "mozilla,system".into());
        env.push(("DENO_TLS_CA_STORE".into(), store));
        env.extend(ca_env());
        env
    }

    /// Every `(host, port)` the resolve step may reach.
    pub fn destinations(&self) -> Vec<(String, u16)> {
        let mut out: Vec<(String, u16)> = self.hosts.entries().to_vec();
        for u in [&self.npm, &self.jsr].into_iter().flatten() {
            if let (Some(h), Some(p)) = (u.host_str(), u.port_or_known_default()) {
                out.push((h.to_ascii_lowercase(), p));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Fills unset registries from the `Download <url>` lines an offline
    /// `deno info` of `npm:`/`jsr:` imports printed.
    pub fn learn_defaults(&mut self, deno_output: &str) {
        for line in deno_output.lines() {
            let Some(u) = line
                .split_whitespace()
                .find(|w| w.starts_with("https://") || w.starts_with("http://"))
            else {
                continue;
            };
            let Ok(url) = url::Url::parse(u.trim_end_matches(['"', ',', '.'])) else {
                continue;
            };
            if self.npm.is_none() && url.path().ends_with(&format!("/{LEARN_NPM}")) {
                let mut base = url.clone();
                base.set_path(url.path().trim_end_matches(LEARN_NPM));
                self.npm = Some(base);
            }
            if self.jsr.is_none() && url.path().ends_with(&format!("/{LEARN_JSR}/meta.json")) {
                let mut base = url.clone();
                base.set_path(
                    url.path()
                        .trim_end_matches(&format!("{LEARN_JSR}/meta.json")),
                );
                self.jsr = Some(base);
            }
        }
    }

    pub fn learned(&self) -> bool {
        self.npm.is_some() && self.jsr.is_some()
    }
}

/// Where the host's CA certificates live (read by the resolve step).
pub const SYSTEM_CA_PATHS: &[&str] = &["/etc/ssl", "/etc/pki", "/usr/share/ca-certificates"];

/// The manager's own `SSL_CERT_FILE`/`SSL_CERT_DIR`, passed on.
pub fn ca_env() -> Vec<(String, String)> {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect()
}

/// The packages an offline `deno info` is asked about to learn the defaults
/// (never downloaded: the run has no network).
pub const LEARN_NPM: &str = "skiff-registry-probe";
pub const LEARN_JSR: &str = "@skiff/registry-probe";
pub const LEARN_SOURCE: &str =
    "import \"npm:skiff-registry-probe@1\";\nimport \"jsr:@skiff/registry-probe@1\";\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_learned_from_denos_download_lines() {
        let mut r = Registries::from_settings(&CheckerSettings::default());
        r.npm = None;
        r.jsr = None;
        r.learn_defaults(
            "Download https://npm.example/skiff-registry-probe\n\
             Download https://jsr.example/@skiff/registry-probe/meta.json\n\
             error: something",
        );
        assert_eq!(
            r.npm.as_ref().map(url::Url::as_str),
            Some("https://npm.example/")
        );
        assert_eq!(
            r.jsr.as_ref().map(url::Url::as_str),
            Some("https://jsr.example/")
        );
        assert!(r.deno_env().iter().all(|(k, _)| k != "NPM_CONFIG_REGISTRY"));
        assert!(r.destinations().contains(&("npm.example".into(), 443)));
    }
}
