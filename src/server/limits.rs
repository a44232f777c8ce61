//! Resource limits a request meets before any rule work: header count and size (431), and rate
//! limits per client address (before any signature is computed) and per rule (before anything
//! reaches the store or Jenkins), both answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::ServerSettings;
use crate::error::ApiError;
use crate::rules::RuleSet;
use crate::verify::ip::ClientAddr;

/// Past this many tracked client keys, idle ones are dropped before adding more.
const MAX_TRACKED_CLIENTS: usize = 100_000;

fn quota(per_sec: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst.max(per_sec)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// A limiter with the quota it was built for, so a reload with the same quota keeps its state.
struct Limiter<L> {
    quota: Quota,
    limiter: Arc<L>,
}

impl<L> Limiter<L> {
    /// The limiter `previous` had for `quota`, else a new one: a reload neither refills a
    /// bucket (a flood would get a fresh burst with every reload) nor drains one.
    fn keep_or_new(quota: Quota, previous: Option<&Self>, new: impl FnOnce(Quota) -> L) -> Self {
        let limiter = match previous {
            Some(previous) if previous.quota == quota => Arc::clone(&previous.limiter),
            _ => Arc::new(new(quota)),
        };
        Self { quota, limiter }
    }
}

/// The limits every request meets, built from the config and the rules (at start-up and on
/// each reload).
pub struct Limits {
    max_header_count: usize,
    max_header_bytes: usize,
    pub body_timeout: Duration,
    per_client: Option<Limiter<DefaultKeyedRateLimiter<IpAddr>>>,
    per_rule: HashMap<String, Limiter<DefaultDirectRateLimiter>>,
}

impl Limits {
    pub fn new(server: &ServerSettings, rules: &RuleSet) -> Self {
        Self::carried_over(server, rules, None)
    }

    /// Limits for a reloaded set: the buckets of `previous` whose quota is unchanged carry on.
    pub fn carried_over(
        server: &ServerSettings,
        rules: &RuleSet,
        previous: Option<&Limits>,
    ) -> Self {
        let per_rule = rules
            .iter()
            .filter_map(|rule| {
                let (per_sec, burst) = rule
                    .rate
                    .unwrap_or((server.rate_per_rule, server.burst_per_rule));
                let before = previous.and_then(|limits| limits.per_rule.get(&rule.name));
                quota(per_sec, burst).map(|q| {
                    (
                        rule.name.clone(),
                        Limiter::keep_or_new(q, before, RateLimiter::direct),
                    )
                })
            })
            .collect();
        let before = previous.and_then(|limits| limits.per_client.as_ref());
        Self {
            max_header_count: server.max_header_count,
            max_header_bytes: server.max_header_bytes,
            body_timeout: Duration::from_secs(server.body_timeout_secs.max(1)),
            per_client: quota(server.rate_per_client, server.burst_per_client)
                .map(|q| Limiter::keep_or_new(q, before, RateLimiter::keyed)),
            per_rule,
        }
    }

    /// 431 when the request carries more header lines or bytes than configured.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let count = headers.len();
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if count > self.max_header_count || bytes > self.max_header_bytes {
            return Err(ApiError::HeadersTooLarge { count, bytes });
        }
        Ok(())
    }

    /// 429 when this client address has used up its rate.
    pub fn check_client(&self, client: ClientAddr) -> Result<(), ApiError> {
        let Some(Limiter { limiter, .. }) = &self.per_client else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED_CLIENTS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&client_key(client))
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// The wait before this rule accepts another call, if it has used up its rate.
    pub fn check_rule(&self, rule: &str) -> Result<(), Duration> {
        match self.per_rule.get(rule) {
            None => Ok(()),
            Some(Limiter { limiter, .. }) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

/// IPv6 clients are limited per /64, the smallest block one subscriber usually holds, so an
/// attacker cannot escape the limit by rotating addresses inside it. Unknown clients share one
/// bucket.
fn client_key(client: ClientAddr) -> IpAddr {
    match client {
        ClientAddr::Known(IpAddr::V4(v4)) => IpAddr::V4(v4),
        ClientAddr::Known(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
        ClientAddr::Unknown => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            client_key(ClientAddr::Known(a)),
            client_key(ClientAddr::Known(b))
        );
        assert_ne!(
            client_key(ClientAddr::Known(a)),
            client_key(ClientAddr::Known(c))
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_key(ClientAddr::Known(mapped)),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_client_over_its_burst_waits() {
        let server = ServerSettings {
            rate_per_client: 1,
            burst_per_client: 3,
            ..ServerSettings::default()
        };
        let limits = Limits::new(&server, &RuleSet::default());
        let client = ClientAddr::Known("192.0.2.1".parse().unwrap());
        for _ in 0..3 {
            assert!(limits.check_client(client).is_ok());
        }
        match limits.check_client(client) {
            Err(ApiError::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Another client is not affected.
        assert!(
            limits
                .check_client(ClientAddr::Known("192.0.2.2".parse().unwrap()))
                .is_ok()
        );
    }

    #[test]
    fn a_reload_keeps_the_buckets_whose_quota_is_unchanged() {
        let server = ServerSettings {
            rate_per_client: 1,
            burst_per_client: 2,
            ..ServerSettings::default()
        };
        let client = ClientAddr::Known("192.0.2.1".parse().unwrap());
        let before = Limits::new(&server, &RuleSet::default());
        for _ in 0..2 {
            assert!(before.check_client(client).is_ok());
        }
        // The same quota: the spent burst stays spent.
        let same = Limits::carried_over(&server, &RuleSet::default(), Some(&before));
        assert!(same.check_client(client).is_err());
        // A new quota is a new bucket.
        let raised = ServerSettings {
            burst_per_client: 5,
            ..server
        };
        let changed = Limits::carried_over(&raised, &RuleSet::default(), Some(&before));
        assert!(changed.check_client(client).is_ok());
    }

    #[test]
    fn header_count_and_size_are_capped() {
        let server = ServerSettings {
            max_header_count: 2,
            max_header_bytes: 32,
            ..ServerSettings::default()
        };
        let limits = Limits::new(&server, &RuleSet::default());
        let mut headers = HeaderMap::new();
        headers.insert("a".parse().unwrap(), "1".parse().unwrap());
        assert!(limits.check_headers(&headers).is_ok());
        headers.insert("b".parse().unwrap(), "x".repeat(40).parse().unwrap());
        assert!(matches!(
            limits.check_headers(&headers),
            Err(ApiError::HeadersTooLarge { .. })
        ));
    }
}
