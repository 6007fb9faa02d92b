//! Session configuration: API keys with roles, and the limits every session applies.

use std::collections::HashSet;
use std::fmt;
use tickwire_core::AccountId;
use tickwire_protocol::{Role, MAX_FRAME};

/// API key id (the Logon's `key_id`).
pub type KeyId = u64;

/// One API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Key id, unique.
    pub id: KeyId,
    /// HMAC secret (any length; 32 random bytes recommended).
    pub secret: Vec<u8>,
    /// What the key may do.
    pub role: Role,
    /// `Trade`: the accounts it may trade. `Read`: the accounts whose reports it receives.
    /// `Admin`: accounts whose reports it receives from logon on (it may act for any account, and
    /// receives the reports of every account it acted for).
    pub accounts: Vec<AccountId>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// Limits and keys shared by every session of a gateway. Times are nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The keys allowed to log on.
    pub keys: Vec<ApiKey>,
    /// A Logon's timestamp must be within this distance of the gateway's clock (either side).
    /// Nonces are remembered for as long as their timestamp is within it.
    pub logon_window_ns: u64,
    /// A connection that has not logged on after this long is closed.
    pub logon_timeout_ns: u64,
    /// The heartbeat interval a client asks for is clamped to `[heartbeat_min_ms, heartbeat_max_ms]`.
    pub heartbeat_min_ms: u32,
    /// See `heartbeat_min_ms`.
    pub heartbeat_max_ms: u32,
    /// Token bucket: sustained inbound messages per second per key (the bucket carries over
    /// from one connection of the key to the next).
    pub rate_per_sec: u32,
    /// Token bucket: burst size (bucket capacity) in messages.
    pub burst: u32,
    /// The session ends when the key's throttle count reaches this: +1 per throttled message,
    /// −1 per message that got a token, back to 0 once the bucket is full again.
    pub throttle_disconnect_after: u32,
    /// Largest inbound frame accepted (≥ the largest client message, 80 bytes).
    pub max_frame: usize,
    /// Client order ids remembered per account for the trading session; a NewOrder beyond it is
    /// rejected `CapacityExhausted`.
    pub max_order_ids_per_account: usize,
    /// At most this many execution reports are written per call (a long replay continues on the
    /// next calls; [`super::Session::poll_timeout`] returns `now` while some are pending).
    pub max_reports_per_flush: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            keys: Vec::new(),
            logon_window_ns: 5_000_000_000,
            logon_timeout_ns: 10_000_000_000,
            heartbeat_min_ms: 100,
            heartbeat_max_ms: 60_000,
            rate_per_sec: 1_000,
            burst: 2_000,
            throttle_disconnect_after: 100,
            max_frame: MAX_FRAME,
            max_order_ids_per_account: 1 << 20,
            max_reports_per_flush: 4096,
        }
    }
}

/// A session configuration the gateway cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfigError(pub String);

impl fmt::Display for SessionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid session configuration: {}", self.0)
    }
}

impl std::error::Error for SessionConfigError {}

impl SessionConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        let bad = |s: &str| Err(SessionConfigError(s.to_string()));
        let mut ids = HashSet::new();
        for k in &self.keys {
            if !ids.insert(k.id) {
                return Err(SessionConfigError(format!("duplicate key id {}", k.id)));
            }
            if k.secret.is_empty() {
                return Err(SessionConfigError(format!("key {}: empty secret", k.id)));
            }
        }
        if self.heartbeat_min_ms == 0 || self.heartbeat_min_ms > self.heartbeat_max_ms {
            return bad("need 0 < heartbeat_min_ms <= heartbeat_max_ms");
        }
        if self.rate_per_sec == 0 || self.burst == 0 {
            return bad("rate_per_sec and burst must be > 0");
        }
        if self.throttle_disconnect_after == 0 {
            return bad("throttle_disconnect_after must be > 0");
        }
        if self.max_frame < 80 || self.max_frame > u16::MAX as usize {
            return bad("max_frame must be in 80..=65535");
        }
        if self.max_reports_per_flush == 0 {
            return bad("max_reports_per_flush must be > 0");
        }
        if self.logon_timeout_ns == 0 {
            return bad("logon_timeout_ns must be > 0");
        }
        Ok(())
    }
}
