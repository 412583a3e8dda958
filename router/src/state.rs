//! What the request path shares: the function directory, the per-function
//! limits, the runtime that yields an upstream for a function, and the
//! request-path settings.

use std::sync::Arc;
use std::time::Duration;

use skiff_core::trusted_proxies::TrustedProxies;

use crate::access_log::AccessLog;
use crate::config::{FunctionDefaults, RouterConfig};
use crate::directory::Directory;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::tunnel::TunnelLimits;
use crate::user_limits::UserLimitsTable;
use crate::user_rate::UserRate;

pub struct RouterState {
    pub directory: Arc<Directory>,
    pub limits: Limits,
    pub runtime: Arc<dyn Runtime>,
    /// The operator's default request timeout (a function may set its own).
    pub request_timeout: Duration,
    /// What a function's settings fall back to (timeout, concurrency).
    pub defaults: FunctionDefaults,
    pub max_body_bytes: u64,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// A request body with no progress for this long ends the request (408).
    pub body_read_timeout: Duration,
    /// A client that takes none of its response for this long is disconnected.
    pub response_write_timeout: Duration,
    /// Idle timeout and lifetime of upgraded (WebSocket) connections.
    pub tunnel_limits: TunnelLimits,
    /// Each user's quotas (kept in step by the directory syncer).
    pub user_limits: Arc<UserLimitsTable>,
    /// Requests per second per user.
    pub user_rate: UserRate,
    /// What is counted per request (see `metrics/`).
    pub metrics: Arc<Metrics>,
    /// Owners' access logs (process runtime, when counting is on).
    pub access_log: Option<AccessLog>,
    /// Whether responses get a `Server-Timing` header.
    pub server_timing: bool,
    /// Who may read answers across origins (the web console).
    pub console_origins: crate::console_cors::AllowedOrigins,
}

impl RouterState {
    pub fn new(
        cfg: &RouterConfig,
        directory: Arc<Directory>,
        runtime: Arc<dyn Runtime>,
        user_limits: Arc<UserLimitsTable>,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> Self {
        Self {
            directory,
            limits: Limits::new(cfg.client_share_percent, cfg.queue_wait),
            runtime,
            request_timeout: cfg.request_timeout,
            defaults: cfg.function_defaults(),
            max_body_bytes: cfg.max_body_bytes,
            trusted_proxies: cfg.trusted_proxies.clone(),
            body_read_timeout: cfg.body_read_timeout,
            response_write_timeout: cfg.response_write_timeout,
            tunnel_limits: TunnelLimits {
                idle: cfg.ws_idle,
                max: cfg.ws_max,
            },
            user_rate: UserRate::new(user_limits.clone()),
            user_limits,
            metrics,
            access_log,
            server_timing: cfg.server_timing,
            console_origins: crate::console_cors::AllowedOrigins::new(&cfg.console_origins),
        }
    }
}
